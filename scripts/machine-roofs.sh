#!/usr/bin/env bash
# Measures this machine's roofs for the CPU kernels, with THREADS threads (default 2):
#   - streaming read bandwidth (a 1 GiB buffer summed with 256-bit loads), the roof of
#     one sequence's decode (every weight byte read once per token);
#   - peak vpdpbusd (AVX-512 VNNI, 256-bit: 32 u8 x s8 multiply-adds) and f32 FMA (8 per
#     instruction) throughput, 12 independent chains per thread, the roofs of prefill and
#     batched decode (multiply-adds per token); and the same on 512-bit registers where the
#     CPU has AVX-512 (twice the 256-bit rate on cores with two 512-bit units, Intel's server
#     cores; Zen 4 runs them as two halves).
# Needs gcc with OpenMP; the VNNI line is skipped on a CPU without AVX-512 VNNI.
# usage: scripts/machine-roofs.sh
set -euo pipefail
threads=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/roofs.c" <<'C'
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define N 200000000L
#define KEEP12Z(r) __asm__ volatile("" ::"v"(r[0]), "v"(r[1]), "v"(r[2]), "v"(r[3]), "v"(r[4]), "v"(r[5]), "v"(r[6]), "v"(r[7]), "v"(r[8]), "v"(r[9]), "v"(r[10]), "v"(r[11]))
#define KEEP12(r) __asm__ volatile("" ::"x"(r[0]), "x"(r[1]), "x"(r[2]), "x"(r[3]), "x"(r[4]), "x"(r[5]), "x"(r[6]), "x"(r[7]), "x"(r[8]), "x"(r[9]), "x"(r[10]), "x"(r[11]))
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static double vnni(void) {
  double best = 0;
#pragma omp parallel reduction(+ : best)
  {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5), r[12];
    for (int i = 0; i < 12; i++) r[i] = _mm256_set1_epi32(i);
    double t0 = now();
    for (long n = 0; n < N / 12; n++) { for (int i = 0; i < 12; i++) r[i] = _mm256_dpbusd_epi32(r[i], a, b); KEEP12(r); }
    best += 32.0 * N / (now() - t0) / 1e9;
  }
  return best;
}
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double vnni512(void) {
  double best = 0;
#pragma omp parallel reduction(+ : best)
  {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5), r[12];
    for (int i = 0; i < 12; i++) r[i] = _mm512_set1_epi32(i);
    double t0 = now();
    for (long n = 0; n < N / 12; n++) { for (int i = 0; i < 12; i++) r[i] = _mm512_dpbusd_epi32(r[i], a, b); KEEP12Z(r); }
    best += 64.0 * N / (now() - t0) / 1e9;
  }
  return best;
}
__attribute__((target("avx512f"))) static double fma512(void) {
  double best = 0;
#pragma omp parallel reduction(+ : best)
  {
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f), r[12];
    for (int i = 0; i < 12; i++) r[i] = _mm512_set1_ps(i);
    double t0 = now();
    for (long n = 0; n < N / 12; n++) { for (int i = 0; i < 12; i++) r[i] = _mm512_fmadd_ps(r[i], x, y); KEEP12Z(r); }
    best += 16.0 * N / (now() - t0) / 1e9;
  }
  return best;
}
static double fma_peak(void) {
  double best = 0;
#pragma omp parallel reduction(+ : best)
  {
    __m256 x = _mm256_set1_ps(1.0001f), y = _mm256_set1_ps(0.9999f), r[12];
    for (int i = 0; i < 12; i++) r[i] = _mm256_set1_ps(i);
    double t0 = now();
    for (long n = 0; n < N / 12; n++) { for (int i = 0; i < 12; i++) r[i] = _mm256_fmadd_ps(r[i], x, y); KEEP12(r); }
    best += 8.0 * N / (now() - t0) / 1e9;
  }
  return best;
}
static double bandwidth(void) {
  size_t n = (size_t)1 << 30;
  char *a = aligned_alloc(64, n);
#pragma omp parallel for
  for (size_t i = 0; i < n; i += 4096) a[i] = 1;
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now();
    long long total = 0;
#pragma omp parallel reduction(+ : total)
    {
      __m256i s = _mm256_setzero_si256();
#pragma omp for
      for (size_t i = 0; i < n; i += 128)
        for (int k = 0; k < 128; k += 32) s = _mm256_add_epi64(s, _mm256_load_si256((__m256i *)(a + i + k)));
      total += _mm256_extract_epi64(s, 0);
    }
    double gbs = n / (now() - t0) / 1e9;
    if (gbs > best) best = gbs;
    if (total < 0) puts("");
  }
  free(a);
  return best;
}
int main(void) {
  printf("threads %d\n", omp_get_max_threads());
  printf("streaming read  %6.1f GB/s (best of 5, 1 GiB)\n", bandwidth());
  printf("f32 FMA (ymm)   %6.1f GMAC/s\n", fma_peak());
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl"))
    printf("vpdpbusd (ymm)  %6.1f GMAC/s (8-bit)\n", vnni());
  else
    printf("vpdpbusd        no AVX-512 VNNI on this CPU\n");
  if (__builtin_cpu_supports("avx512f"))
    printf("f32 FMA (zmm)   %6.1f GMAC/s\n", fma512());
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
    printf("vpdpbusd (zmm)  %6.1f GMAC/s (8-bit)\n", vnni512());
  return 0;
}
C
gcc -O3 -funroll-all-loops -mavx2 -mfma -fopenmp "$work/roofs.c" -o "$work/roofs"
OMP_NUM_THREADS=$threads "$work/roofs"
