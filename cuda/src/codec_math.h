// The codec's per-element arithmetic, written once: the host coders
// (slicer_host.cpp, slicer_decode.cpp, positions.cpp) and the data-parallel stages
// (parallel_encode.h, parallel_decode.h, on the host and on the device) all call
// these, so the float rounding and the integer layouts cannot drift apart.
#ifndef SLICER_CODEC_MATH_H
#define SLICER_CODEC_MATH_H

#include "slicer_codec.h"

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define SLICER_HD __host__ __device__
#else
#define SLICER_HD
#endif

namespace slicer
{

//! k = floor((1 - s)·T): the most values ATKF keeps, as a person counts it for a decimal
//! sparsity. s travels as float32 (0.99 is 0.99000001), which alone would keep 2 of 300
//! where a person keeps 3; a float32 is within 2^-25 of the decimal it was rounded from,
//! so that much of T is added back before the floor. Evaluated in double, in this order,
//! by every encoder, decoder and predictor (slicer_compile/codec/config.py kept_count).
SLICER_HD inline uint64_t keptCount(float sparsity, uint64_t T)
{
    double const t = static_cast<double>(T);
    double const k = floor((1.0 - static_cast<double>(sparsity)) * t + t * 0x1p-25);
    return k >= t ? T : static_cast<uint64_t>(k);
}

//! The one range check of the SLICER knobs in C++ (the Python spec's is SlicerConfig):
//! every C entry point and the encoder plugin call it.
SLICER_HD inline bool knobsValid(slicer_knobs const& k)
{
    return k.blocksPos >= 1 && k.blocksPos <= 64 && k.blocksNeg >= 1 && k.blocksNeg <= 64 && k.qBits >= 1
        && k.qBits <= 16 && k.qMin >= 1 && k.qMin <= k.qBits && k.sparsity >= 0.0f && k.sparsity < 1.0f
        && k.lam > -1.0f && k.lam < 1.0f && k.delta >= 0.0f && k.delta <= 3.4e38f;
}

SLICER_HD inline int bitLength(uint64_t v)
{
    int bits = 0;
    while (v)
    {
        ++bits;
        v >>= 1;
    }
    return bits;
}

SLICER_HD inline uint64_t packedBytes(uint64_t count, int width)
{
    return (count * static_cast<uint64_t>(width) + 7) / 8;
}

//! Block of sorted rank r among n values in nb equal-cardinality blocks (the last takes the rest).
SLICER_HD inline uint32_t blockOfRank(uint64_t r, uint64_t n, uint64_t nb)
{
    uint64_t const base = n / nb;
    uint64_t const b = r / base;
    return static_cast<uint32_t>(b < nb ? b : nb - 1);
}

SLICER_HD inline float fsub(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

SLICER_HD inline float fdiv(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

SLICER_HD inline float roundEven(float v)
{
#if defined(__CUDA_ARCH__)
    return rintf(v);
#else
    return std::nearbyint(v); // the default rounding mode: ties to even, as np.rint
#endif
}

//! A decoded magnitude, lo + code·step, rounds past hi when hi is near the float32
//! maximum: clamp it there, so that a finite tensor never decodes to +Inf (every
//! decoder does, and quant.dequantize_groups).
SLICER_HD inline float clampFinite(float magnitude)
{
    float const top = 3.40282346638528859811704183484516925e+38f; // FLT_MAX
    return magnitude > top ? top : magnitude;
}

//! AIQ step of a block with bounds [lo, hi] at q bits (0 for q = 0).
SLICER_HD inline float stepOf(float lo, float hi, int q)
{
    if (q <= 0)
    {
        return 0.0f;
    }
    return fdiv(fsub(hi, lo), static_cast<float>((int64_t{1} << q) - 1));
}

SLICER_HD inline uint32_t quantizeCode(float v, float lo, float step, int q)
{
    float const safeStep = step > 0.0f ? step : 1.0f;
    float const code = roundEven(fdiv(fsub(v, lo), safeStep));
    float const levels = static_cast<float>((int64_t{1} << q) - 1);
    return static_cast<uint32_t>(code < levels ? code : levels);
}

//! Bits of a fixed-width index below `space`.
SLICER_HD inline int indexWidth(uint64_t space)
{
    int const bits = bitLength(space - 1);
    return bits > 1 ? bits : 1;
}

//! Golomb field width and short-code bound of modulus m (positions.cpp golombShape).
struct GolombShape
{
    int width;
    uint64_t u;
};

SLICER_HD inline GolombShape golombShape(uint64_t m)
{
    if (m == 1)
    {
        return {0, 0};
    }
    int const b = bitLength(m - 1);
    return {b - 1, (uint64_t{1} << b) - m};
}

//! Sizes of the equal-cardinality blocks of `count` values in at most `maxBlocks` (the last takes the rest).
inline std::vector<int64_t> blockSizes(int64_t count, int maxBlocks)
{
    int64_t const nblocks = count < maxBlocks ? count : maxBlocks;
    std::vector<int64_t> sizes(static_cast<size_t>(nblocks > 0 ? nblocks : 0), nblocks > 0 ? count / nblocks : 0);
    if (nblocks > 0)
    {
        sizes.back() = count - (count / nblocks) * (nblocks - 1);
    }
    return sizes;
}

} // namespace slicer

#endif // SLICER_CODEC_MATH_H
