// CPU tests of the TensorRT plugin's logic through its real interfaces (no GPU, no libnvinfer): creator fields
// and rejections, clone, serialise -> deserialise, output shapes through a test IExprBuilder (symbolic N/H/W),
// formats, types, workspace, and runtime shape checks. Exit code 0 only when every check passes.
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "InvolutionPlugin.h"

using namespace nvinfer1;
using rednet::InvolutionAttrs;
using rednet::trt::InvolutionPlugin;
using rednet::trt::InvolutionPluginCreator;

namespace {

int failures = 0, checks = 0;

void Expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// ---- logger that records the plugin's messages -------------------------------------------------------------
struct RecordingLogger : ILogger {
  std::string last_error;
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last_error = msg;
  }
};
struct Finder : ILoggerFinder {
  RecordingLogger logger;
  ILogger* findLogger() override { return &logger; }
};
Finder g_finder;

// ---- a symbolic expression builder: every expression is a function of (N, H, W) ------------------------------
struct Env {
  int64_t n, h, w;
};
using Fn = std::function<int64_t(const Env&)>;

class Expr : public IDimensionExpr {
 public:
  Expr(Fn fn, bool constant) : impl_(std::move(fn), constant) { mImpl = &impl_; }
  int64_t Eval(const Env& env) const { return impl_.fn(env); }

 private:
  struct Impl : apiv::VDimensionExpr {
    Impl(Fn f, bool c) : fn(std::move(f)), constant(c) {}
    bool isConstant() const override { return constant; }
    int64_t getConstantValue() const override { return constant ? fn(Env{}) : -1; }
    bool isSizeTensor() const override { return false; }
    Fn fn;
    bool constant;
  } impl_;
};

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

class Builder : public IExprBuilder {
 public:
  Builder() : impl_(this) { mImpl = &impl_; }
  const Expr* Make(Fn fn, bool constant) {
    pool_.push_back(std::make_unique<Expr>(std::move(fn), constant));
    return pool_.back().get();
  }

 private:
  struct Impl : apiv::VExprBuilder {
    explicit Impl(Builder* b) : owner(b) {}
    const IDimensionExpr* constant(int64_t v) override { return owner->Make([v](const Env&) { return v; }, true); }
    const IDimensionExpr* operation(DimensionOperation op, const IDimensionExpr& a, const IDimensionExpr& b) override {
      const auto* x = static_cast<const Expr*>(&a);
      const auto* y = static_cast<const Expr*>(&b);
      Fn f = [op, x, y](const Env& e) -> int64_t {
        const int64_t p = x->Eval(e), q = y->Eval(e);
        switch (op) {
          case DimensionOperation::kSUM: return p + q;
          case DimensionOperation::kPROD: return p * q;
          case DimensionOperation::kMAX: return std::max(p, q);
          case DimensionOperation::kMIN: return std::min(p, q);
          case DimensionOperation::kSUB: return p - q;
          case DimensionOperation::kEQUAL: return p == q;
          case DimensionOperation::kLESS: return p < q;
          case DimensionOperation::kFLOOR_DIV: return FloorDiv(p, q);
          case DimensionOperation::kCEIL_DIV: return -FloorDiv(-p, q);
        }
        return -1;
      };
      return owner->Make(f, a.isConstant() && b.isConstant());
    }
    const IDimensionExpr* declareSizeTensor(int32_t, const IDimensionExpr&, const IDimensionExpr&) override {
      return nullptr;
    }
    Builder* owner;
  } impl_;
  std::deque<std::unique_ptr<Expr>> pool_;
};

// ---- helpers -------------------------------------------------------------------------------------------------
struct Fields {
  std::vector<int32_t> values;
  std::vector<PluginField> fields;
  PluginFieldCollection fc{};
  explicit Fields(std::vector<std::pair<const char*, int32_t>> items) {
    values.reserve(items.size());
    for (auto& [name, v] : items) {
      values.push_back(v);
      fields.emplace_back(name, &values.back(), PluginFieldType::kINT32, 1);
    }
    fc.nbFields = static_cast<int32_t>(fields.size());
    fc.fields = fields.data();
  }
};

Fields Valid(int32_t k = 7, int32_t s = 2, int32_t p = 3, int32_t d = 1, int32_t g = 4) {
  return Fields({{"kernel_size", k}, {"stride", s}, {"padding", p}, {"dilation", d}, {"groups", g}});
}

std::unique_ptr<InvolutionPlugin> Create(InvolutionPluginCreator& creator, const PluginFieldCollection* fc,
                                         TensorRTPhase phase = TensorRTPhase::kBUILD) {
  return std::unique_ptr<InvolutionPlugin>(static_cast<InvolutionPlugin*>(creator.createPlugin("inv", fc, phase)));
}

bool SameAttrs(const InvolutionAttrs& a, const InvolutionAttrs& b) {
  return a.kernel_size == b.kernel_size && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation &&
         a.groups == b.groups && a.activation == b.activation;
}

PluginTensorDesc Desc(std::vector<int64_t> dims, DataType type, TensorFormat format = TensorFormat::kLINEAR) {
  PluginTensorDesc d{};
  d.dims.nbDims = static_cast<int32_t>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) d.dims.d[i] = dims[i];
  d.type = type;
  d.format = format;
  return d;
}

void ExpectRejected(InvolutionPluginCreator& creator, const PluginFieldCollection* fc, const std::string& needle) {
  g_finder.logger.last_error.clear();
  auto plugin = Create(creator, fc);
  Expect(plugin == nullptr, "creator should reject (" + needle + ")");
  Expect(g_finder.logger.last_error.find(needle) != std::string::npos,
         "rejection reason should mention '" + needle + "', logged '" + g_finder.logger.last_error + "'");
}

// Every attribute lands in its own slot: for attribute sets with each value off its default and the five size
// attributes distinct (one read into another's place changes the plugin), activation 0 and 1, through every integer
// field type the parser takes, in the exporter's order and reversed, with the ONNX routing attributes among them.
// The plugin made from the fields serialises the same values under the same names, and its output shape follows
// the contract's shape rule, written out here rather than taken from involution_contract.h.
void CheckEveryAttributeParsed(InvolutionPluginCreator& creator) {
  constexpr int kCount = 6;
  const char* names[kCount] = {"kernel_size", "stride", "padding", "dilation", "groups", "activation"};
  const char version[] = "1", name_space[] = "";
  for (const InvolutionAttrs& a : {InvolutionAttrs{3, 2, 4, 5, 6, 1}, InvolutionAttrs{5, 3, 0, 2, 4, 0},
                                   InvolutionAttrs{7, 1, 2, 3, 5, 1}, InvolutionAttrs{9, 4, 6, 1, 3, 0}}) {
    const int64_t values[kCount] = {a.kernel_size, a.stride, a.padding, a.dilation, a.groups, a.activation};
    const std::string label = "K" + std::to_string(a.kernel_size) + " s" + std::to_string(a.stride) + " p" +
                              std::to_string(a.padding) + " d" + std::to_string(a.dilation) + " g" +
                              std::to_string(a.groups) + " act" + std::to_string(a.activation);
    int8_t v8[kCount];
    int16_t v16[kCount];
    int32_t v32[kCount];
    int64_t v64[kCount];
    for (int i = 0; i < kCount; ++i) v8[i] = int8_t(values[i]), v16[i] = int16_t(values[i]), v32[i] = int32_t(values[i]), v64[i] = values[i];
    const std::pair<PluginFieldType, const void*> storages[] = {{PluginFieldType::kINT8, v8}, {PluginFieldType::kINT16, v16},
                                                                 {PluginFieldType::kINT32, v32}, {PluginFieldType::kINT64, v64}};
    for (const auto& [type, data] : storages)
      for (bool reversed : {false, true}) {
        const size_t width = type == PluginFieldType::kINT8 ? 1 : type == PluginFieldType::kINT16 ? 2 : type == PluginFieldType::kINT32 ? 4 : 8;
        std::vector<PluginField> fields;
        for (int j = 0; j < kCount; ++j) {
          const int i = reversed ? kCount - 1 - j : j;
          fields.emplace_back(names[i], static_cast<const char*>(data) + i * width, type, 1);
          if (j == 2) fields.emplace_back("plugin_version", version, PluginFieldType::kCHAR, 1);
        }
        fields.emplace_back("plugin_namespace", name_space, PluginFieldType::kCHAR, 0);
        PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
        const std::string what = label + " from fields of type " + std::to_string(int(type)) + (reversed ? ", reversed" : "");
        auto plugin = Create(creator, &fc);
        Expect(plugin != nullptr && SameAttrs(plugin->attrs(), a), what + ": parsed attributes");
        if (!plugin) continue;

        const PluginFieldCollection* out = plugin->getFieldsToSerialize();
        int matched = 0;
        for (int f = 0; f < out->nbFields; ++f)
          for (int i = 0; i < kCount; ++i)
            if (std::strcmp(out->fields[f].name, names[i]) == 0 && out->fields[f].type == PluginFieldType::kINT32 &&
                *static_cast<const int32_t*>(out->fields[f].data) == values[i])
              ++matched;
        Expect(matched == kCount, what + ": serialised fields carry the same values under the same names");

        Builder builder;
        DimsExprs in[4];
        in[0].nbDims = 4;
        in[0].d[0] = builder.Make([](const Env& e) { return e.n; }, false);
        in[0].d[1] = builder.constant(8 * a.groups);
        in[0].d[2] = builder.Make([](const Env& e) { return e.h; }, false);
        in[0].d[3] = builder.Make([](const Env& e) { return e.w; }, false);
        in[1] = in[0];
        in[2].nbDims = in[3].nbDims = 1;
        in[2].d[0] = in[3].d[0] = builder.constant(8 * a.groups);
        DimsExprs shape[1];
        Expect(plugin->getOutputShapes(in, 4, nullptr, 0, shape, 1, builder) == 0, what + ": getOutputShapes");
        const Env env{2, 61, 40};
        auto rule = [&](int64_t size) { return (size + 2 * a.padding - a.dilation * (a.kernel_size - 1) - 1) / a.stride + 1; };
        Expect(static_cast<const Expr*>(shape[0].d[2])->Eval(env) == rule(env.h) &&
                   static_cast<const Expr*>(shape[0].d[3])->Eval(env) == rule(env.w),
               what + ": output shape by the shape rule");
      }
  }
}

// ---- format negotiation ---------------------------------------------------------------------------------------
// x, weight, scale, shift, y at build time (N/H/W dynamic) with C channels and G*K*K = 196 weight channels.
struct Combination {
  TensorFormat format;
  DataType type;
};
constexpr int kPositions = 5;
const char* const kPositionNames[kPositions] = {"x", "weight", "scale", "shift", "y"};

PluginTensorDesc BuildDesc(int pos, Combination f, int64_t channels) {
  if (pos == 2 || pos == 3) return Desc({channels}, f.type, f.format);
  return Desc({-1, pos == 1 ? 4 * 49 : channels, -1, -1}, f.type, f.format);
}

std::string Label(Combination f) {
  return "format " + std::to_string(int(f.format)) + " type " + std::to_string(int(f.type));
}

// Every (format, type) value the headers define: a rule that accepts one value too many is caught.
std::vector<Combination> AllCombinations() {
  std::vector<Combination> all;
  for (int32_t f = 0; f < EnumMax<TensorFormat>(); ++f)
    for (int32_t t = 0; t < EnumMax<DataType>(); ++t) all.push_back({TensorFormat(f), DataType(t)});
  return all;
}

bool Same(Combination a, Combination b) { return a.format == b.format && a.type == b.type; }

// Asks FormatSupported and supportsFormatCombination at pos with positions above pos holding a value the plugin
// must not look at (TensorRT leaves them unset); both answers must not depend on it.
bool Ask(InvolutionPlugin& plugin, int pos, const std::vector<Combination>& chosen, Combination candidate,
         int64_t channels, bool through_plugin) {
  bool answers[2];
  for (int garbage = 0; garbage < 2; ++garbage) {
    DynamicPluginTensorDesc dyn[kPositions]{};
    PluginTensorDesc descs[kPositions]{};
    for (int i = 0; i < kPositions; ++i) {
      const Combination f = i < pos ? chosen[i] : i == pos ? candidate
                                     : garbage ? Combination{TensorFormat::kCHW32, DataType::kINT8}
                                               : Combination{TensorFormat::kLINEAR, DataType::kFLOAT};
      descs[i] = BuildDesc(i, f, channels);
      dyn[i].desc = descs[i];
    }
    answers[garbage] = through_plugin ? plugin.supportsFormatCombination(pos, dyn, 4, 1)
                                      : rednet::trt::FormatSupported(pos, descs);
  }
  Expect(answers[0] == answers[1], "the answer at " + std::string(kPositionNames[pos]) + " for " + Label(candidate) +
                                       " must not depend on higher positions");
  return answers[0];
}

// TensorRT's negotiation: positions in order, each asked for every (format, type) with the lower ones set to values
// already accepted. Returns every full combination accepted.
std::vector<std::vector<Combination>> Negotiate(InvolutionPlugin& plugin, int64_t channels, bool through_plugin) {
  std::vector<std::vector<Combination>> done, open = {{}};
  while (!open.empty()) {
    std::vector<Combination> prefix = open.back();
    open.pop_back();
    for (Combination candidate : AllCombinations()) {
      if (!Ask(plugin, int(prefix.size()), prefix, candidate, channels, through_plugin)) continue;
      std::vector<Combination> next = prefix;
      next.push_back(candidate);
      (next.size() == kPositions ? done : open).push_back(next);
    }
  }
  return done;
}

void CheckFormatNegotiation(InvolutionPlugin& plugin) {
  const Combination f32{TensorFormat::kLINEAR, DataType::kFLOAT}, f16{TensorFormat::kLINEAR, DataType::kHALF};
  const Combination hwc8{TensorFormat::kHWC8, DataType::kHALF}, hwc{TensorFormat::kHWC, DataType::kFLOAT};
  // channels -> the formats of x the plugin takes; everything else follows x (scale, shift LINEAR of x's type)
  const std::pair<int64_t, std::vector<Combination>> cases[] = {
      {64, {f32, f16, hwc8, hwc}}, {8, {f32, f16, hwc8, hwc}},
      {60, {f32, f16, hwc}},  // HWC8 would pad y's channels to 64
      {-1, {f32, f16, hwc}},  // channel count unknown at build time: HWC8 cannot be ruled safe
  };
  for (const auto& [channels, x_formats] : cases) {
    const std::string at = " (C=" + std::to_string(channels) + ")";
    const auto combos = Negotiate(plugin, channels, false);
    Expect(combos.size() == x_formats.size(), "FormatSupported: " + std::to_string(x_formats.size()) +
                                                  " full combinations" + at + ", got " + std::to_string(combos.size()));
    for (Combination x : x_formats) {
      bool found = false;
      for (const auto& c : combos)
        found = found || (Same(c[0], x) && Same(c[1], x) && Same(c[2], {TensorFormat::kLINEAR, x.type}) &&
                          Same(c[3], {TensorFormat::kLINEAR, x.type}) && Same(c[4], x));
      Expect(found, "x, weight, y " + Label(x) + " with LINEAR scale/shift of its type accepted" + at);
    }
    // supportsFormatCombination (what TensorRT asks) answers as FormatSupported
    Expect(Negotiate(plugin, channels, true).size() == x_formats.size(),
           "supportsFormatCombination offers the same combinations" + at);
  }
  // a scale or shift of rank 1 never takes a channel-last format, whatever x has
  for (Combination x : {hwc8, hwc})
    for (int pos : {2, 3}) {
      const PluginTensorDesc descs[4] = {BuildDesc(0, x, 64), BuildDesc(1, x, 64), BuildDesc(2, x, 64), BuildDesc(3, x, 64)};
      Expect(!rednet::trt::FormatSupported(pos, descs), std::string(kPositionNames[pos]) + " in " + Label(x) + " rejected");
    }
  Expect(!plugin.supportsFormatCombination(5, nullptr, 4, 1) && !plugin.supportsFormatCombination(-1, nullptr, 4, 1),
         "positions outside 0..4 rejected");
}

// Runtime layouts: the channel pitches of each accepted combination, and the rejections naming the formats.
void CheckLayouts() {
  struct Case {
    TensorFormat format;
    DataType type;
    int64_t c, groups, k;
    bool channel_last;
    int64_t x_pitch, weight_pitch, y_pitch;
  };
  const Case cases[] = {
      {TensorFormat::kLINEAR, DataType::kFLOAT, 64, 4, 7, false, 0, 0, 0},
      {TensorFormat::kLINEAR, DataType::kHALF, 64, 4, 7, false, 0, 0, 0},
      {TensorFormat::kHWC8, DataType::kHALF, 64, 4, 7, true, 64, 200, 64},     // 196 taps padded to 200
      {TensorFormat::kHWC8, DataType::kHALF, 32, 2, 3, true, 32, 24, 32},      // 18 -> 24
      {TensorFormat::kHWC8, DataType::kHALF, 512, 32, 7, true, 512, 1568, 512},  // 1568 = 196*8, no padding
      {TensorFormat::kHWC8, DataType::kHALF, 8, 1, 1, true, 8, 8, 8},          // 1 tap -> 8
      {TensorFormat::kHWC, DataType::kFLOAT, 64, 4, 7, true, 64, 196, 64},     // unpadded
      {TensorFormat::kHWC, DataType::kFLOAT, 12, 3, 3, true, 12, 27, 12},
  };
  for (const Case& c : cases) {
    const int64_t taps = c.groups * c.k * c.k;
    PluginTensorDesc in[4] = {Desc({2, c.c, 9, 9}, c.type, c.format), Desc({2, taps, 9, 9}, c.type, c.format),
                              Desc({c.c}, c.type), Desc({c.c}, c.type)};
    const PluginTensorDesc out = Desc({2, c.c, 9, 9}, c.type, c.format);
    rednet::TensorLayout layout;
    layout.x_pitch = layout.weight_pitch = layout.y_pitch = -7;
    const std::string err = rednet::trt::LayoutOf(in, out, &layout);
    const std::string what = Label({c.format, c.type}) + " C=" + std::to_string(c.c) + " taps=" + std::to_string(taps);
    const bool channel_last = layout.order == rednet::Layout::kNHWC;
    Expect(err.empty() && channel_last == c.channel_last && layout.x_pitch == c.x_pitch &&
               layout.weight_pitch == c.weight_pitch && layout.y_pitch == c.y_pitch,
           what + ": layout " + std::to_string(channel_last) + " pitches " + std::to_string(layout.x_pitch) +
               "/" + std::to_string(layout.weight_pitch) + "/" + std::to_string(layout.y_pitch) + " " + err);
  }
  const DataType h = DataType::kHALF, f = DataType::kFLOAT;
  const TensorFormat lin = TensorFormat::kLINEAR, hwc8 = TensorFormat::kHWC8, hwc = TensorFormat::kHWC;
  struct Bad {
    TensorFormat formats[5];
    DataType types[5];
    int64_t c;
    const char* needle;
  };
  const Bad bad[] = {
      {{hwc8, lin, lin, lin, hwc8}, {h, h, h, h, h}, 64, "weight LINEAR fp16"},
      {{hwc8, hwc8, lin, lin, lin}, {h, h, h, h, h}, 64, "y LINEAR fp16"},
      {{hwc8, hwc8, hwc8, lin, hwc8}, {h, h, h, h, h}, 64, "scale HWC8 fp16"},
      {{hwc, hwc, lin, hwc, hwc}, {f, f, f, f, f}, 64, "shift HWC fp32"},
      {{hwc8, hwc8, lin, lin, hwc8}, {f, f, f, f, f}, 64, "x HWC8 fp32"},
      {{hwc, hwc, lin, lin, hwc}, {h, h, h, h, h}, 64, "x HWC fp16"},
      {{hwc8, hwc8, lin, lin, hwc8}, {h, h, h, h, h}, 12, "x HWC8 fp16"},  // y would be padded
      {{TensorFormat::kCHW32, TensorFormat::kCHW32, lin, lin, TensorFormat::kCHW32}, {h, h, h, h, h}, 64, "x format 5"},
  };
  for (const Bad& b : bad) {
    PluginTensorDesc in[4] = {Desc({2, b.c, 9, 9}, b.types[0], b.formats[0]), Desc({2, 196, 9, 9}, b.types[1], b.formats[1]),
                              Desc({b.c}, b.types[2], b.formats[2]), Desc({b.c}, b.types[3], b.formats[3])};
    const PluginTensorDesc out = Desc({2, b.c, 9, 9}, b.types[4], b.formats[4]);
    rednet::TensorLayout layout;
    const std::string err = rednet::trt::LayoutOf(in, out, &layout);
    Expect(err.find(b.needle) != std::string::npos, std::string("layout rejected naming '") + b.needle + "': " + err);
  }
}

}  // namespace

int main() {
  rednet::trt::SetLoggerFinder(&g_finder);
  InvolutionPluginCreator creator;

  // creator identity and field names
  Expect(std::strcmp(creator.getPluginName(), "Involution") == 0 && std::strcmp(creator.getPluginVersion(), "1") == 0 &&
             std::strcmp(creator.getPluginNamespace(), "") == 0,
         "creator name/version/namespace");
  const PluginFieldCollection* names = creator.getFieldNames();
  const char* expected[] = {"kernel_size", "stride", "padding", "dilation", "groups", "activation"};
  Expect(names->nbFields == 6, "six creator fields");
  for (int i = 0; i < 6 && i < names->nbFields; ++i)
    Expect(std::strcmp(names->fields[i].name, expected[i]) == 0 && names->fields[i].type == PluginFieldType::kINT32,
           std::string("creator field ") + expected[i]);

  // creation from fields, incl. int64 fields and the ONNX routing attributes
  Fields valid = Valid();
  auto plugin = Create(creator, &valid.fc);
  Expect(plugin != nullptr && SameAttrs(plugin->attrs(), {7, 2, 3, 1, 4}), "create from valid fields");
  {
    std::vector<int64_t> v = {5, 1, 2, 1, 2};
    std::vector<PluginField> f;
    for (int i = 0; i < 5; ++i) f.emplace_back(expected[i], &v[i], PluginFieldType::kINT64, 1);
    const char version[] = "1";
    f.emplace_back("plugin_version", version, PluginFieldType::kCHAR, 1);
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    auto p64 = Create(creator, &fc);
    Expect(p64 != nullptr && SameAttrs(p64->attrs(), {5, 1, 2, 1, 2}), "create from int64 fields + routing attribute");
  }

  CheckEveryAttributeParsed(creator);

  // rejections with a reason naming the value
  Fields even = Valid(4);
  ExpectRejected(creator, &even.fc, "kernel_size=4");
  Fields stride0 = Valid(7, 0);
  ExpectRejected(creator, &stride0.fc, "stride=0");
  Fields groups0 = Valid(7, 1, 3, 1, 0);
  ExpectRejected(creator, &groups0.fc, "groups=0");
  Fields activation2({{"kernel_size", 3}, {"stride", 1}, {"padding", 1}, {"dilation", 1}, {"groups", 1}, {"activation", 2}});
  ExpectRejected(creator, &activation2.fc, "activation=2");
  Fields missing({{"kernel_size", 3}, {"stride", 1}, {"padding", 1}, {"dilation", 1}});
  ExpectRejected(creator, &missing.fc, "missing field 'groups'");
  Fields twice({{"kernel_size", 3}, {"kernel_size", 3}, {"stride", 1}, {"padding", 1}, {"dilation", 1}, {"groups", 1}});
  ExpectRejected(creator, &twice.fc, "given twice");
  {
    float k = 3.f;
    Fields base = Valid(3, 1, 1, 1, 1);
    base.fields[0] = PluginField("kernel_size", &k, PluginFieldType::kFLOAT32, 1);
    ExpectRejected(creator, &base.fc, "must be an integer field");
    base.fields[0] = PluginField("kernel_size", base.values.data(), PluginFieldType::kINT32, 2);
    ExpectRejected(creator, &base.fc, "exactly one integer");
  }
  ExpectRejected(creator, nullptr, "no plugin fields");

  // capabilities, clone, serialisation round trip
  Expect(plugin->getCapabilityInterface(PluginCapabilityType::kCORE) == static_cast<IPluginV3OneCore*>(plugin.get()) &&
             plugin->getCapabilityInterface(PluginCapabilityType::kBUILD) == static_cast<IPluginV3OneBuild*>(plugin.get()) &&
             plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME) == static_cast<IPluginV3OneRuntime*>(plugin.get()),
         "capability interfaces");
  std::unique_ptr<InvolutionPlugin> copy(static_cast<InvolutionPlugin*>(plugin->clone()));
  Expect(copy && copy.get() != plugin.get() && SameAttrs(copy->attrs(), plugin->attrs()), "clone");
  // the clone's serialised fields, their values copied out as TensorRT stores them (the names are kAttributeNames)
  const PluginFieldCollection* serialized = copy->getFieldsToSerialize();
  std::vector<int32_t> bytes;
  std::vector<PluginField> replay;
  bytes.reserve(serialized->nbFields);
  for (int i = 0; i < serialized->nbFields; ++i) {
    bytes.push_back(*static_cast<const int32_t*>(serialized->fields[i].data));
    replay.emplace_back(serialized->fields[i].name, &bytes.back(), serialized->fields[i].type, 1);
  }
  copy.reset();  // the plugin made from the serialised fields must not depend on the one that wrote them
  PluginFieldCollection replay_fc{static_cast<int32_t>(replay.size()), replay.data()};
  auto restored = Create(creator, &replay_fc, TensorRTPhase::kRUNTIME);
  Expect(restored && SameAttrs(restored->attrs(), plugin->attrs()), "serialise -> deserialise round trip");
  std::unique_ptr<IPluginV3> attached(plugin->attachToContext(nullptr));
  Expect(attached != nullptr, "attachToContext gives a runtime clone");

  // output shapes: symbolic N/H/W, stride 1 and 2, odd sizes, dilation
  for (auto attrs : {InvolutionAttrs{7, 1, 3, 1, 4}, InvolutionAttrs{7, 2, 3, 1, 4}, InvolutionAttrs{3, 2, 1, 2, 2},
                     InvolutionAttrs{5, 3, 0, 1, 1}}) {
    InvolutionPlugin p(attrs);
    Builder builder;
    DimsExprs in[4];
    in[0].nbDims = 4;
    in[0].d[0] = builder.Make([](const Env& e) { return e.n; }, false);
    in[0].d[1] = builder.constant(64);
    in[0].d[2] = builder.Make([](const Env& e) { return e.h; }, false);
    in[0].d[3] = builder.Make([](const Env& e) { return e.w; }, false);
    in[1] = in[0];
    in[2].nbDims = in[3].nbDims = 1;
    in[2].d[0] = in[3].d[0] = builder.constant(64);
    DimsExprs out[1];
    Expect(p.getOutputShapes(in, 4, nullptr, 0, out, 1, builder) == 0 && out[0].nbDims == 4, "getOutputShapes ok");
    for (Env env : {Env{1, 224, 224}, Env{3, 225, 161}, Env{8, 57, 33}, Env{2, 7, 9}}) {
      const auto* ho = static_cast<const Expr*>(out[0].d[2]);
      const auto* wo = static_cast<const Expr*>(out[0].d[3]);
      Expect(static_cast<const Expr*>(out[0].d[0])->Eval(env) == env.n && out[0].d[1]->getConstantValue() == 64 &&
                 ho->Eval(env) == rednet::InvolutionOutputSize(env.h, attrs) &&
                 wo->Eval(env) == rednet::InvolutionOutputSize(env.w, attrs),
             "output shape at H=" + std::to_string(env.h) + " W=" + std::to_string(env.w) + " K=" +
                 std::to_string(attrs.kernel_size) + " s=" + std::to_string(attrs.stride));
    }
  }

  // formats and types: x, weight, scale, shift, y
  auto dyn = [](DataType t, int pos, TensorFormat f = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc d{};
    d.desc = pos == 2 || pos == 3 ? Desc({64}, t, f) : Desc({-1, pos == 1 ? 4 * 49 : 64, -1, -1}, t, f);
    return d;
  };
  auto all = [&](DataType t, DynamicPluginTensorDesc* d) {
    for (int pos = 0; pos < 5; ++pos) d[pos] = dyn(t, pos);
  };
  DynamicPluginTensorDesc f32[5];
  all(DataType::kFLOAT, f32);
  CheckFormatNegotiation(*plugin);
  CheckLayouts();
  Expect(!plugin->supportsFormatCombination(0, f32, 2, 1), "the two-input form of the old contract rejected");
  DataType out_type = DataType::kINT32;
  DataType in_f16[4] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF};
  DataType in_mixed[4] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT};
  Expect(plugin->getOutputDataTypes(&out_type, 1, in_f16, 4) == 0 && out_type == DataType::kHALF, "fp16 in -> fp16 out");
  g_finder.logger.last_error.clear();
  Expect(plugin->getOutputDataTypes(&out_type, 1, in_mixed, 4) != 0 &&
             g_finder.logger.last_error.find("scale fp16") != std::string::npos,
         "mixed input types rejected, naming the odd one");
  Expect(plugin->getNbOutputs() == 1 && plugin->getWorkspaceSize(f32, 4, f32 + 4, 1) == 0, "one output, no workspace");

  // configure and runtime checks (K=7, s=2, p=3, G=4)
  DynamicPluginTensorDesc conf[5];
  all(DataType::kFLOAT, conf);
  Expect(plugin->configurePlugin(conf, 4, conf + 4, 1) == 0, "configure with dynamic N/H/W");
  Expect(plugin->configurePlugin(conf, 2, conf + 4, 1) != 0 &&
             g_finder.logger.last_error.find("expects 4 inputs") != std::string::npos,
         "configure rejects the two-input form");
  conf[0].desc.dims.d[1] = 30;
  Expect(plugin->configurePlugin(conf, 4, conf + 4, 1) != 0 && g_finder.logger.last_error.find("C=30") != std::string::npos,
         "configure rejects C not divisible by groups");
  conf[0].desc.dims.d[1] = 64;
  conf[1].desc.dims.d[1] = 50;
  Expect(plugin->configurePlugin(conf, 4, conf + 4, 1) != 0, "configure rejects weight channels != G*K*K");
  conf[1].desc.dims.d[1] = 4 * 49;
  conf[2].desc.dims.d[0] = 63;
  Expect(plugin->configurePlugin(conf, 4, conf + 4, 1) != 0 && g_finder.logger.last_error.find("scale has 63") != std::string::npos,
         "configure rejects a scale of the wrong length");
  PluginTensorDesc rt[5] = {Desc({2, 64, 57, 41}, DataType::kFLOAT), Desc({2, 196, 29, 21}, DataType::kFLOAT),
                            Desc({64}, DataType::kFLOAT), Desc({64}, DataType::kFLOAT),
                            Desc({2, 64, 29, 21}, DataType::kFLOAT)};
  Expect(plugin->onShapeChange(rt, 4, rt + 4, 1) == 0, "onShapeChange accepts contract shapes");
  rt[3] = Desc({32}, DataType::kFLOAT);
  Expect(plugin->onShapeChange(rt, 4, rt + 4, 1) != 0 && g_finder.logger.last_error.find("shift shape (32,)") != std::string::npos,
         "onShapeChange rejects a shift of the wrong length");
  rt[3] = Desc({64}, DataType::kFLOAT);
  rt[1] = Desc({2, 196, 28, 21}, DataType::kFLOAT);
  Expect(plugin->onShapeChange(rt, 4, rt + 4, 1) != 0 && g_finder.logger.last_error.find("(2, 196, 28, 21)") != std::string::npos,
         "onShapeChange rejects a weight that breaks the shape rule");
  void* none[4] = {nullptr, nullptr, nullptr, nullptr};
  Expect(plugin->enqueue(rt, rt + 4, none, none, nullptr, nullptr) != 0, "enqueue refuses bad shapes before touching the GPU");

  // channel-last at run time: onShapeChange takes HWC8 fp16 / HWC fp32, and enqueue hands the layout on (it stops
  // at the driver check here, the last step before the launch)
  for (auto [format, type] : {std::pair{TensorFormat::kHWC8, DataType::kHALF}, std::pair{TensorFormat::kHWC, DataType::kFLOAT}}) {
    PluginTensorDesc cl[5] = {Desc({2, 64, 57, 41}, type, format), Desc({2, 196, 29, 21}, type, format), Desc({64}, type),
                              Desc({64}, type), Desc({2, 64, 29, 21}, type, format)};
    const std::string name = format == TensorFormat::kHWC8 ? "HWC8" : "HWC";
    Expect(plugin->onShapeChange(cl, 4, cl + 4, 1) == 0, "onShapeChange accepts " + name);
    g_finder.logger.last_error.clear();
    Expect(plugin->enqueue(cl, cl + 4, none, none, nullptr, nullptr) != 0 &&
               g_finder.logger.last_error.find("NVIDIA driver") != std::string::npos,
           "enqueue " + name + " passes every check before the driver's: '" + g_finder.logger.last_error + "'");
    cl[4].format = TensorFormat::kLINEAR;
    Expect(plugin->onShapeChange(cl, 4, cl + 4, 1) != 0 && g_finder.logger.last_error.find("y LINEAR") != std::string::npos,
           "onShapeChange rejects y LINEAR with x " + name);
  }

  std::printf("involution_trt_plugin_test: %d checks, %d failures (TensorRT %d.%d headers)\n", checks, failures,
              NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR);
  return failures == 0 ? 0 : 1;
}
