// The driver-vs-runtime check of the CUDA libraries (common/cuda_driver_check.h): the message for each case, and
// the check of this machine (no driver on a CPU-only machine, else whether its driver is new enough).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "cuda_driver_check.h"

namespace {

int g_failures = 0;

void Expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++g_failures;
  }
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

int main() {
  using rednet::CudaDriverMismatch;
  Expect(rednet::CudaVersionName(12040) == "12.4" && rednet::CudaVersionName(13000) == "13.0", "version names");
  Expect(CudaDriverMismatch(13000, 13000, "lib.so").empty(), "same version runs");
  Expect(CudaDriverMismatch(13010, 13000, "lib.so").empty(), "newer driver runs");
  Expect(CudaDriverMismatch(12020, 12080, "lib.so").empty(), "older minor of the same major runs (minor compatibility)");
  const std::string old = CudaDriverMismatch(12040, 13000, "lib.so");
  Expect(Has(old, "lib.so was built with the CUDA 13.0 runtime") && Has(old, "supports CUDA 12.4 at most") &&
             Has(old, "CUDA toolkit <= 12.4") && Has(old, "make plugins"),
         "older major driver: names both versions and the rebuild: " + old);
  Expect(old.find('\n') == std::string::npos, "one line");
  const std::string none = CudaDriverMismatch(0, 13000, "lib.so");
  Expect(Has(none, "no NVIDIA driver") && Has(none, "CUDA 13.0"), "no driver: " + none);

  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  const std::string here = rednet::CudaDriverProblem();
  Expect(here.empty() == (driver > 0 && driver / 1000 >= CUDART_VERSION / 1000),
         "this machine's check agrees with cudaDriverGetVersion: '" + here + "'");
  Expect(driver > 0 || Has(here, "no NVIDIA driver"), "without a driver the check says so");
  std::printf("cuda_driver_check_test: runtime %s, driver %s: %s; %d failures\n",
              rednet::CudaVersionName(CUDART_VERSION).c_str(), driver ? rednet::CudaVersionName(driver).c_str() : "none",
              here.empty() ? "ok" : here.c_str(), g_failures);
  return g_failures == 0 ? 0 : 1;
}
