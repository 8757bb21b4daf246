"""The involution op: contract (spec) and torch custom op."""
from .involution import involution, involution_strided
from .spec import activation_names, attribute_defaults, attribute_names, check_attributes, check_shapes, load_spec, output_size

__all__ = ["involution", "involution_strided", "activation_names", "attribute_defaults", "attribute_names", "check_attributes", "check_shapes", "load_spec", "output_size"]
