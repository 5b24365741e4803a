// The SLICER encoder on the host, byte for byte as slicer_compile/codec/slicer.py:
// ATKF, equal-cardinality magnitude blocks per sign, AIQ with the DS-guided bit
// choice, position coding, and the frame. It is the CPU fallback of the CUDA
// path and the place its pieces are checked: float32 arithmetic, products and
// sums never fused (the library builds with -ffp-contract=off).

#include "bitstream.h"
#include "codec_math.h"
#include "slicer_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace slicer
{
namespace
{

constexpr uint8_t kFORMAT_VERSION = 1;
constexpr uint8_t kCODEC_SLICER = 1;

class ByteSink
{
public:
    void raw(void const* data, size_t n)
    {
        auto const* p = static_cast<uint8_t const*>(data);
        mBytes.insert(mBytes.end(), p, p + n);
    }

    void u8(uint8_t v)
    {
        mBytes.push_back(v);
    }

    void u16(uint16_t v)
    {
        u8(static_cast<uint8_t>(v));
        u8(static_cast<uint8_t>(v >> 8));
    }

    void u32(uint32_t v)
    {
        for (int i = 0; i < 4; ++i)
        {
            u8(static_cast<uint8_t>(v >> (8 * i)));
        }
    }

    void f32(float v)
    {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        u32(bits);
    }

    void section(std::vector<uint8_t> const& data)
    {
        u32(static_cast<uint32_t>(data.size()));
        raw(data.data(), data.size());
    }

    std::vector<uint8_t> mBytes;
};

//! The k-th highest of ``scores`` (1 <= k < T; every score a finite float >= +0, whose
//! bit patterns order as the values do): a radix select, two passes of a 16-bit
//! histogram, O(T) without the copy and partitioning of a selection by comparisons.
constexpr uint64_t kRadixSelectMin = 1u << 16;

float kthHighest(std::vector<float> const& scores, uint64_t k)
{
    std::vector<uint32_t> histogram(1u << 16);
    auto bitsOf = [](float v)
    {
        uint32_t b;
        std::memcpy(&b, &v, sizeof b);
        return b;
    };
    for (float v : scores)
    {
        ++histogram[bitsOf(v) >> 16];
    }
    uint64_t above = 0;
    uint32_t high = 0xFFFFu;
    for (;; --high)
    {
        if (above + histogram[high] >= k)
        {
            break;
        }
        above += histogram[high];
    }
    std::fill(histogram.begin(), histogram.end(), 0u);
    for (float v : scores)
    {
        uint32_t const b = bitsOf(v);
        if ((b >> 16) == high)
        {
            ++histogram[b & 0xFFFFu];
        }
    }
    uint32_t low = 0xFFFFu;
    for (;; --low)
    {
        if (above + histogram[low] >= k)
        {
            break;
        }
        above += histogram[low];
    }
    uint32_t const bits = (high << 16) | low;
    float kth;
    std::memcpy(&kth, &bits, sizeof kth);
    return kth;
}

//! The k-th highest of ``scores`` by selecting among the few above a bound found on
//! a sample (every 16th score: if the k-th is above the bound, so is everything the
//! selection needs); the whole selection where the bound falls short.
float kthHighestBySample(std::vector<float> const& scores, uint64_t k)
{
    uint64_t const T = scores.size();
    constexpr uint64_t kSTRIDE = 16;
    std::vector<float> pool;
    if (T >= 64 * kSTRIDE)
    {
        std::vector<float> sample;
        sample.reserve(T / kSTRIDE + 1);
        for (uint64_t i = 0; i < T; i += kSTRIDE)
        {
            sample.push_back(scores[i]);
        }
        // A rank in the sample with a margin: about 1.5 k + 2 sqrt(k) of the T would pass.
        uint64_t const want = std::min<uint64_t>(sample.size() - 1,
            (k + k / 2 + 2 * static_cast<uint64_t>(std::sqrt(static_cast<double>(k)))) / kSTRIDE + 1);
        std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(sample.size() - 1 - want),
            sample.end());
        float const bound = sample[sample.size() - 1 - want];
        pool.resize(T);
        uint64_t n = 0;
        for (uint64_t i = 0; i < T; ++i)
        {
            pool[n] = scores[i];
            n += scores[i] >= bound;
        }
        pool.resize(n);
        if (n < k)
        {
            pool.assign(scores.begin(), scores.end());  // the sample misled: select over everything
        }
    }
    else
    {
        pool.assign(scores.begin(), scores.end());
    }
    uint64_t const n = pool.size();
    std::nth_element(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(n - k), pool.end());
    return pool[n - k];
}

//! Flat indices (ascending) of the min(k, nnz) highest scores, ties to the lower index.
std::vector<int64_t> selectKept(std::vector<float> const& scores, uint64_t k)
{
    std::vector<int64_t> kept;
    uint64_t const T = scores.size();
    if (k == 0 || T == 0)
    {
        return kept;
    }
    float kth = 0.0f;
    if (k < T && T >= kRadixSelectMin)
    {
        kth = kthHighest(scores, k);
    }
    else if (k < T)  // small: the histograms' 256 KiB would cost more than the selection
    {
        kth = kthHighestBySample(scores, k);
    }
    if (k >= T || kth == 0.0f)
    {
        for (uint64_t i = 0; i < T; ++i)
        {
            if (scores[i] > 0.0f)
            {
                kept.push_back(static_cast<int64_t>(i));
            }
        }
        return kept;
    }
    // Every score >= kth, without branches (which of the T scores is kept is data, and
    // would be mispredicted): each index is written, the count moves on for a kept one.
    // At least k are; ties at kth beyond the k-th are then dropped from the end, so
    // the ties kept are the lowest indices.
    kept.resize(T);
    uint64_t n = 0;
    for (uint64_t i = 0; i < T; ++i)
    {
        kept[n] = static_cast<int64_t>(i);
        n += scores[i] >= kth;
    }
    if (n > k)
    {
        // The ties to drop are the last n - k: from the first of them on, keep only the
        // scores above kth (one pass, whatever the number of ties).
        uint64_t excess = n - k;
        uint64_t first = n;
        while (excess > 0)
        {
            excess -= scores[kept[--first]] == kth;
        }
        uint64_t w = first;
        for (uint64_t j = first; j < n; ++j)
        {
            kept[w] = kept[j];
            w += scores[kept[j]] != kth;
        }
        n = w;
    }
    kept.resize(n);
    return kept;
}

//! Block label of each value: rank by magnitude (descending, ties to the earlier one).
std::vector<uint8_t> splitBlocks(std::vector<float> const& magnitudes, int maxBlocks)
{
    std::vector<int64_t> const sizes = blockSizes(static_cast<int64_t>(magnitudes.size()), maxBlocks);
    std::vector<uint8_t> labels(magnitudes.size(), 0);
    if (sizes.size() <= 1)
    {
        return labels;
    }
    // A block is a run of ranks, not an order within it: one partition per block
    // boundary (O(T) each) instead of a full sort. Ties go to the earlier value, as a
    // stable sort by magnitude would put them.
    std::vector<size_t> order(magnitudes.size());
    std::iota(order.begin(), order.end(), 0);
    auto const before = [&](size_t a, size_t b)
    { return magnitudes[a] > magnitudes[b] || (magnitudes[a] == magnitudes[b] && a < b); };
    size_t start = 0;
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        size_t const end = start + static_cast<size_t>(sizes[b]);
        if (b + 1 < sizes.size())
        {
            std::nth_element(order.begin() + static_cast<std::ptrdiff_t>(start),
                order.begin() + static_cast<std::ptrdiff_t>(end), order.end(), before);
        }
        for (size_t j = start; j < end; ++j)
        {
            labels[order[j]] = static_cast<uint8_t>(b);
        }
        start = end;
    }
    return labels;
}

std::vector<uint8_t> subset(std::vector<int64_t> const& indices, uint64_t space)
{
    std::vector<uint8_t> out(slicer_subset_max_nbytes(indices.size(), space) + 16 + 2 * packedNbytes(space, 1));
    size_t written = 0;
    slicer_encode_subset(indices.data(), indices.size(), space, out.data(), out.size(), &written);
    out.resize(written);
    return out;
}

std::vector<uint8_t> labelSection(std::vector<uint8_t> const& labels, int base)
{
    std::vector<uint8_t> out(labels.size() * 8 + 16);
    size_t written = 0;
    slicer_encode_labels(labels.data(), labels.size(), base, out.data(), out.size(), &written);
    out.resize(written);
    return out;
}

} // namespace
} // namespace slicer

extern "C" slicer_status slicer_encode_host(float const* x, uint32_t const* shape, int ndim, int dtypeCode,
    slicer_knobs const* knobs, uint8_t* out, size_t capacity, size_t* written)
{
    using namespace slicer;
    if (!shape || !knobs || !written || ndim < 0 || ndim > 8 || (dtypeCode != 1 && dtypeCode != 2))
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t T = 1;
    for (int d = 0; d < ndim; ++d)
    {
        T *= shape[d];
    }
    if (T > 0xFFFFFFFFULL || (T > 0 && !x) || !slicer::knobsValid(*knobs))
    {
        return SLICER_ERR_ARGUMENT;
    }

    // ATKF, and the finiteness check in the same pass (a NaN fails every comparison).
    std::vector<float> scores(T);
    float const posScale = 1.0f + knobs->lam;
    float const negScale = 1.0f - knobs->lam;
    bool const plain = knobs->lam == 0.0f;
    int finite = 1;
    for (uint64_t i = 0; i < T; ++i)
    {
        float const v = x[i];
        float const magnitude = std::fabs(v);
        finite &= magnitude <= std::numeric_limits<float>::max();
        scores[i] = plain ? magnitude : (v > 0.0f ? v / posScale : (v < 0.0f ? -v / negScale : 0.0f));
    }
    if (!finite)
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t const k = slicer::keptCount(knobs->sparsity, T);
    std::vector<int64_t> const kept = selectKept(scores, k);
    std::vector<float> values(kept.size());
    for (size_t i = 0; i < kept.size(); ++i)
    {
        values[i] = x[kept[i]];
    }
    return slicer_encode_from_kept(
        kept.data(), values.data(), kept.size(), shape, ndim, dtypeCode, knobs, out, capacity, written);
}

extern "C" slicer_status slicer_encode_from_kept(int64_t const* kept, float const* values, uint64_t keptCount,
    uint32_t const* shape, int ndim, int dtypeCode, slicer_knobs const* knobs, uint8_t* out, size_t capacity,
    size_t* written)
{
    using namespace slicer;
    if (!shape || !knobs || !written || ndim < 0 || ndim > 8 || (dtypeCode != 1 && dtypeCode != 2)
        || (keptCount > 0 && (!kept || !values)))
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t T = 1;
    for (int d = 0; d < ndim; ++d)
    {
        T *= shape[d];
    }
    // MS: split by sign, rank into equal-cardinality blocks
    std::vector<int64_t> negSel, posSel;
    std::vector<float> posMags, negMags;
    negSel.reserve(keptCount);
    posSel.reserve(keptCount);
    negMags.reserve(keptCount);
    posMags.reserve(keptCount);
    for (size_t i = 0; i < keptCount; ++i)
    {
        float const v = values[i];
        if (v < 0.0f)
        {
            negSel.push_back(static_cast<int64_t>(i));
            negMags.push_back(-v);
        }
        else
        {
            posSel.push_back(static_cast<int64_t>(i));
            posMags.push_back(v);
        }
    }
    std::vector<uint8_t> const labelsPos = splitBlocks(posMags, knobs->blocksPos);
    std::vector<uint8_t> const labelsNeg = splitBlocks(negMags, knobs->blocksNeg);
    std::vector<int64_t> sizes = blockSizes(static_cast<int64_t>(posSel.size()), knobs->blocksPos);
    size_t const nbPos = sizes.size();
    std::vector<int64_t> const negSizes = blockSizes(static_cast<int64_t>(negSel.size()), knobs->blocksNeg);
    sizes.insert(sizes.end(), negSizes.begin(), negSizes.end());

    // Magnitudes grouped by block, index order within a block: one flat array, block b
    // at [start[b], start[b + 1]) (a counting sort by label).
    std::vector<size_t> start(sizes.size() + 1, 0);
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        start[b + 1] = start[b] + static_cast<size_t>(sizes[b]);
    }
    std::vector<float> grouped(keptCount);
    {
        std::vector<uint8_t> blockOf(keptCount);
        for (size_t j = 0; j < posSel.size(); ++j)
        {
            blockOf[posSel[j]] = labelsPos[j];
        }
        for (size_t j = 0; j < negSel.size(); ++j)
        {
            blockOf[negSel[j]] = static_cast<uint8_t>(labelsNeg[j] + nbPos);
        }
        std::vector<size_t> next(start.begin(), start.end() - 1);
        for (size_t i = 0; i < keptCount; ++i)
        {
            grouped[next[blockOf[i]]++] = std::fabs(values[i]);
        }
    }

    // AIQ + ABQ per block; the code buffers are sized once for the largest block.
    size_t largest = 0;
    for (int64_t n : sizes)
    {
        largest = std::max(largest, static_cast<size_t>(n));
    }
    std::vector<int32_t> reference(largest), codes(largest), trialCodes(largest);
    std::vector<uint64_t> wide(largest);
    ByteSink table;
    std::vector<uint8_t> valueSection;
    valueSection.reserve(packedNbytes(keptCount, knobs->qBits) + sizes.size());
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        float const* g = grouped.data() + start[b];
        size_t const n = start[b + 1] - start[b];
        float const lo = *std::min_element(g, g + n);
        float const hi = *std::max_element(g, g + n);
        int q = lo == hi ? 0 : knobs->qBits;
        std::fill(codes.begin(), codes.begin() + static_cast<std::ptrdiff_t>(n), 0);
        if (q > 0)
        {
            float const step = stepOf(lo, hi, q);
            for (size_t i = 0; i < n; ++i)
            {
                reference[i] = static_cast<int32_t>(quantizeCode(g[i], lo, step, q));
            }
            std::copy(reference.begin(), reference.begin() + static_cast<std::ptrdiff_t>(n), codes.begin());
            for (int trial = knobs->qBits - 1; trial >= knobs->qMin; --trial)
            {
                float const trialStep = stepOf(lo, hi, trial);
                int64_t mismatch = 0;
                for (size_t i = 0; i < n; ++i)
                {
                    trialCodes[i] = static_cast<int32_t>(quantizeCode(g[i], lo, trialStep, trial));
                    mismatch += std::llabs(static_cast<int64_t>(reference[i] >> (knobs->qBits - trial)) - trialCodes[i]);
                }
                double const ds = static_cast<double>(mismatch) / static_cast<double>(n);
                if (!(ds <= static_cast<double>(knobs->delta)))
                {
                    break;
                }
                q = trial;
                codes.swap(trialCodes);
            }
        }
        table.u8(static_cast<uint8_t>(q));
        table.f32(lo);
        table.f32(hi);
        std::copy(codes.begin(), codes.begin() + static_cast<std::ptrdiff_t>(n), wide.begin());
        size_t const nbytes = packedNbytes(n, q);
        size_t const at = valueSection.size();
        valueSection.resize(at + nbytes);
        size_t done = 0;
        slicer_pack_uint(wide.data(), n, q, valueSection.data() + at, nbytes, &done);
    }

    // Frame
    ByteSink payload;
    payload.raw("SLCR", 4);
    payload.u8(kFORMAT_VERSION);
    payload.u8(kCODEC_SLICER);
    payload.u8(static_cast<uint8_t>(dtypeCode));
    payload.u8(static_cast<uint8_t>(ndim));
    payload.u16(0);
    payload.u16(16);
    for (int d = 0; d < ndim; ++d)
    {
        payload.u32(shape[d]);
    }
    payload.f32(knobs->sparsity);
    payload.f32(knobs->lam);
    payload.f32(knobs->delta);
    payload.u8(static_cast<uint8_t>(knobs->blocksPos));
    payload.u8(static_cast<uint8_t>(knobs->blocksNeg));
    payload.u8(static_cast<uint8_t>(knobs->qBits));
    payload.u8(static_cast<uint8_t>(knobs->qMin));
    ByteSink meta;
    meta.u32(static_cast<uint32_t>(keptCount));
    meta.u32(static_cast<uint32_t>(negSel.size()));
    payload.section(meta.mBytes);
    std::vector<int64_t> const keptIndices(kept, kept + keptCount);
    payload.section(subset(keptIndices, T));
    payload.section(subset(negSel, keptCount));
    payload.section(labelSection(labelsPos, static_cast<int>(nbPos)));
    payload.section(labelSection(labelsNeg, static_cast<int>(sizes.size() - nbPos)));
    payload.section(table.mBytes);
    payload.section(valueSection);
    payload.u32(slicer_crc32(payload.mBytes.data(), payload.mBytes.size(), 0));

    *written = payload.mBytes.size();
    if (payload.mBytes.size() > capacity || !out)
    {
        return SLICER_ERR_CAPACITY;
    }
    std::memcpy(out, payload.mBytes.data(), payload.mBytes.size());
    return SLICER_OK;
}

extern "C" slicer_status slicer_knobs_from_values(const float* values, slicer_knobs* knobs)
{
    // SLICER_KNOB_ORDER: s, λ, δ, M+, M-, q_bits, q_min; the integer knobs must be whole.
    if (!values || !knobs)
    {
        return SLICER_ERR_ARGUMENT;
    }
    for (int i = 3; i < 7; ++i)
    {
        if (!(std::floor(values[i]) == values[i]) || values[i] < 0.0f || values[i] > 64.0f)
        {
            return SLICER_ERR_ARGUMENT;
        }
    }
    slicer_knobs const k{values[0], values[1], values[2], static_cast<int>(values[3]), static_cast<int>(values[4]),
        static_cast<int>(values[5]), static_cast<int>(values[6])};
    if (!slicer::knobsValid(k))
    {
        return SLICER_ERR_ARGUMENT;
    }
    *knobs = k;
    return SLICER_OK;
}
