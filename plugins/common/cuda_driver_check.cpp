#include "cuda_driver_check.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstring>

namespace rednet {

std::string CudaDriverProblem() {
  static const std::string problem = [] {
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    Dl_info info{};
    const bool named = dladdr(reinterpret_cast<void*>(&rednet_cuda_driver_problem), &info) != 0 && info.dli_fname && *info.dli_fname;
    return CudaDriverMismatch(driver, CUDART_VERSION, named ? info.dli_fname : "the rednet CUDA library");
  }();
  return problem;
}

}  // namespace rednet

int rednet_cuda_driver_problem(char* message, size_t size) {
  const std::string problem = rednet::CudaDriverProblem();
  if (message != nullptr && size > 0) {
    std::strncpy(message, problem.c_str(), size - 1);
    message[size - 1] = '\0';
  }
  return problem.empty() ? 0 : 1;
}
