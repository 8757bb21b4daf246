// Does the NVIDIA driver support the CUDA runtime a library was built with? A library links the static runtime
// of the toolkit that compiled it (CUDART_VERSION), and a driver older than that runtime's major version fails
// every launch with cudaErrorInsufficientDriver. Within one major version, CUDA's minor-version compatibility
// lets an older driver run it. Pure, so the message is tested on machines without a GPU.
#pragma once

#include <cstddef>
#include <string>

namespace rednet {

// "12.4" from the CUDA encoding 1000 * major + 10 * minor (cudaDriverGetVersion, CUDART_VERSION).
inline std::string CudaVersionName(int version) {
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

// "" when a driver supporting CUDA `driver_version` (0: no driver) can run a runtime `runtime_version`;
// otherwise one line naming both and how to fix it.
inline std::string CudaDriverMismatch(int driver_version, int runtime_version, const std::string& library) {
  if (driver_version <= 0)
    return library + ": no NVIDIA driver found (cudaDriverGetVersion gave " + std::to_string(driver_version) +
           "); it needs a driver supporting CUDA " + CudaVersionName(runtime_version) + " or newer";
  if (driver_version / 1000 >= runtime_version / 1000) return "";
  return library + " was built with the CUDA " + CudaVersionName(runtime_version) +
         " runtime, but the NVIDIA driver supports CUDA " + CudaVersionName(driver_version) +
         " at most: rebuild it on this machine with a CUDA toolkit <= " + CudaVersionName(driver_version) +
         " (make plugins), or install a driver for CUDA " + CudaVersionName(runtime_version);
}

}  // namespace rednet

namespace rednet {

// CudaDriverMismatch for this machine's driver and the runtime this library was compiled with, naming the
// library's file; asked once per process (a running process keeps its driver).
std::string CudaDriverProblem();

}  // namespace rednet

// C ABI for Python (ctypes) before it builds or runs anything: 0 when the driver can run this library, else 1 and
// the reason in `message` (truncated to `size`).
extern "C" __attribute__((visibility("default"))) int rednet_cuda_driver_problem(char* message, size_t size);
