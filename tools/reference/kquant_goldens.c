// K-quant goldens from llama.cpp itself: quantize_row_q4_K_ref / q5_K_ref / q6_K_ref and
// dequantize_row_q4_K / q5_K / q6_K of a prebuilt libggml-base.so (the one npm's
// @node-llama-cpp/linux-x64 ships), on inputs that hit the quantizers' corner cases. Writes
// inputs.f32, then per type <type>.bin (the blocks) and <type>.deq.f32 (their dequantization).
// Run by kquant-goldens.sh; the outputs live in native/test/fixtures/kquant/.
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QK_K 256
#define NBLOCKS 12

typedef void (*quant_fn)(const float*, void*, int64_t);
typedef void (*dequant_fn)(const void*, float*, int64_t);

static uint32_t lcg = 12345u;
static double uniform(void) {  // (0, 1)
  lcg = lcg * 1664525u + 1013904223u;
  return (lcg + 0.5) / 4294967296.0;
}
static float gauss(float std) {
  return (float)(std * sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform()));
}

static void write_file(const char* dir, const char* name, const void* p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
  fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s path/to/libggml-base.so OUT_DIR\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  const int n = NBLOCKS * QK_K;
  float* x = calloc(n, sizeof(float));
  for (int b = 0; b < NBLOCKS; ++b) {
    float* v = x + b * QK_K;
    for (int i = 0; i < QK_K; ++i) {
      switch (b) {
        case 0: v[i] = 0.1f + 2 * cosf((float)i); break;           // test-quantize-fns data
        case 1: v[i] = gauss(0.02f); break;                          // weight-like
        case 2: v[i] = i == 77 ? 20.f : gauss(1.f); break;           // an outlier
        case 3: v[i] = 0.f; break;                                   // all zero
        case 4: v[i] = 0.25f; break;                                 // constant: max == min
        case 5: v[i] = fabsf(gauss(0.05f)) + 0.01f; break;           // all positive: min -> 0
        case 6: v[i] = gauss(1e-6f); break;                          // tiny
        case 7: v[i] = gauss(1000.f); break;                         // large
        case 8: v[i] = (i / 32) % 2 ? gauss(0.1f) : 0.f; break;      // zero sub-blocks
        case 9: v[i] = (i % 2 ? -1.f : 1.f) * (float)i / 64; break;  // signed ramp
        default: v[i] = gauss(0.05f); break;
      }
    }
  }
  write_file(argv[2], "inputs.f32", x, n * sizeof(float));
  const char* names[3] = {"q4_k", "q5_k", "q6_k"};
  const char* qsym[3] = {"quantize_row_q4_K_ref", "quantize_row_q5_K_ref",
                         "quantize_row_q6_K_ref"};
  const char* dsym[3] = {"dequantize_row_q4_K", "dequantize_row_q5_K", "dequantize_row_q6_K"};
  const size_t bytes[3] = {144, 176, 210};
  for (int t = 0; t < 3; ++t) {
    quant_fn q = (quant_fn)dlsym(lib, qsym[t]);
    dequant_fn d = (dequant_fn)dlsym(lib, dsym[t]);
    if (!q || !d) {
      fprintf(stderr, "missing %s or %s\n", qsym[t], dsym[t]);
      return 1;
    }
    uint8_t* blocks = calloc(NBLOCKS, bytes[t]);
    float* y = calloc(n, sizeof(float));
    q(x, blocks, n);
    d(blocks, y, n);
    char name[64];
    snprintf(name, sizeof name, "%s.bin", names[t]);
    write_file(argv[2], name, blocks, NBLOCKS * bytes[t]);
    snprintf(name, sizeof name, "%s.deq.f32", names[t]);
    write_file(argv[2], name, y, n * sizeof(float));
    free(blocks);
    free(y);
  }
  free(x);
  printf("wrote %d blocks of inputs and q4_k/q5_k/q6_k goldens to %s\n", NBLOCKS, argv[2]);
  return 0;
}
