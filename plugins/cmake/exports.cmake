# rednet_export_only(<target> <symbol>...): the shared library exports exactly these C symbols. A linker version
# script makes everything else local, including what the static CUDA runtime and the C++ standard library bring
# in, which visibility attributes cannot reach.
function(rednet_export_only target)
  set(map "${CMAKE_CURRENT_BINARY_DIR}/${target}.exports.map")
  list(JOIN ARGN "; " globals)
  file(WRITE "${map}" "{\n  global: ${globals};\n  local: *;\n};\n")
  target_link_options(${target} PRIVATE "-Wl,--version-script=${map}")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${map}")
endfunction()
