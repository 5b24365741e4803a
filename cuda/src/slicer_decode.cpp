// The SLICER decoder on the host, check for check as slicer_compile/codec/slicer.py
// and wire.py: every length, count and index is validated against the buffer
// and the limits before anything is sized from it. The parse yields the kept
// positions and their values (O(k)); the dense decoder scatters them here, the GPU
// decoder (slicer_cuda_decode) scatters them on the device.

#include "bitstream.h"
#include "codec_math.h"
#include "slicer_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace slicer
{
namespace
{

constexpr size_t kHEADER_BYTES = 12;
constexpr size_t kKNOB_BYTES = 16;
constexpr float kFLOAT16_MAX = 65504.0f;

uint32_t readU32(uint8_t const* p)
{
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16)
        | (static_cast<uint32_t>(p[3]) << 24);
}

float readF32(uint8_t const* p)
{
    uint32_t const bits = readU32(p);
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
}

//! Hands out length-prefixed sections, each checked against the end of the body.
class Sections
{
public:
    Sections(uint8_t const* data, size_t start, size_t end)
        : mData(data)
        , mPos(start)
        , mEnd(end)
    {
    }

    bool next(uint8_t const** section, size_t* len)
    {
        if (mPos + 4 > mEnd)
        {
            return false;
        }
        size_t const length = readU32(mData + mPos);
        size_t const start = mPos + 4;
        if (length > mEnd - start)
        {
            return false;
        }
        *section = mData + start;
        *len = length;
        mPos = start + length;
        return true;
    }

    bool finished() const
    {
        return mPos == mEnd;
    }

private:
    uint8_t const* mData;
    size_t mPos;
    size_t mEnd;
};

bool readLabels(uint8_t const* buf, size_t len, std::vector<int64_t> const& sizes, std::vector<uint8_t>* labels)
{
    int64_t total = 0;
    for (int64_t s : sizes)
    {
        total += s;
    }
    labels->assign(static_cast<size_t>(total), 0);
    if (slicer_decode_labels(buf, len, static_cast<uint64_t>(total), static_cast<int>(sizes.size()), labels->data())
        != SLICER_OK)
    {
        return false;
    }
    if (sizes.size() > 1)
    {
        std::vector<int64_t> counts(sizes.size(), 0);
        for (uint8_t label : *labels)
        {
            ++counts[label]; // label < base = sizes.size(), checked by the label decoder
        }
        if (counts != sizes)
        {
            return false; // not equal-cardinality blocks
        }
    }
    return true;
}

//! Everything but the scatter: kept flat positions (ascending) and their decoded values.
slicer_status decodeSparse(uint8_t const* payload, size_t len, slicer_limits const* limits,
    std::vector<int64_t>* kept, std::vector<float>* values, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements)
{
    // --- frame (wire.read_header) ---
    if (len > limits->maxPayloadBytes || len < kHEADER_BYTES + 4 || std::memcmp(payload, "SLCR", 4) != 0
        || payload[4] != 1)
    {
        return SLICER_ERR_PAYLOAD;
    }
    if (slicer_crc32(payload, len - 4, 0) != readU32(payload + len - 4))
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint8_t const codec = payload[5];
    int const dtype = payload[6];
    int const dims = payload[7];
    uint16_t const flags = static_cast<uint16_t>(payload[8] | (payload[9] << 8));
    size_t const knobBytes = static_cast<size_t>(payload[10] | (payload[11] << 8));
    if (flags != 0 || (dtype != 1 && dtype != 2) || dims > 8)
    {
        return SLICER_ERR_PAYLOAD;
    }
    size_t const shapeEnd = kHEADER_BYTES + 4 * static_cast<size_t>(dims);
    size_t const knobsEnd = shapeEnd + knobBytes;
    if (knobsEnd > len - 4)
    {
        return SLICER_ERR_PAYLOAD;
    }
    bool anyZero = false;
    for (int d = 0; d < dims; ++d)
    {
        shape[d] = readU32(payload + kHEADER_BYTES + 4 * d);
        anyZero = anyZero || shape[d] == 0;
    }
    uint64_t T = anyZero ? 0 : 1;
    for (int d = 0; d < dims && !anyZero; ++d)
    {
        T *= shape[d]; // each factor < 2^32 and T stays <= 2^32 here: no overflow
        if (T > limits->maxElements || T > 0xFFFFFFFFULL)
        {
            return SLICER_ERR_PAYLOAD;
        }
    }
    if (codec != 1 || knobBytes != kKNOB_BYTES)
    {
        return codec != 1 ? SLICER_ERR_ARGUMENT : SLICER_ERR_PAYLOAD; // only SLICER payloads here
    }
    // --- knobs (slicer.read_config) ---
    uint8_t const* kb = payload + shapeEnd;
    float const s = readF32(kb);
    float const lam = readF32(kb + 4);
    float const delta = readF32(kb + 8);
    int const mPos = kb[12];
    int const mNeg = kb[13];
    int const qBits = kb[14];
    int const qMin = kb[15];
    if (!(s >= 0.0f && s < 1.0f && lam > -1.0f && lam < 1.0f && std::isfinite(delta) && delta >= 0.0f)
        || mPos < 1 || mPos > 64 || mNeg < 1 || mNeg > 64 || qMin < 1 || qMin > qBits || qBits > 16)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint64_t const k = slicer::keptCount(s, T);
    Sections sections(payload, knobsEnd, len - 4);
    uint8_t const* meta = nullptr;
    size_t metaLen = 0;
    // --- meta ---
    if (!sections.next(&meta, &metaLen) || metaLen != 8)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint64_t const keptCount = readU32(meta);
    uint64_t const negCount = readU32(meta + 4);
    if (keptCount > k || negCount > keptCount)
    {
        return SLICER_ERR_PAYLOAD;
    }
    // --- every section's length, before anything is sized from a count ---
    // A count (kept, negative) can claim up to T from a few bytes; only once each
    // section is exactly as long as those counts require is anything allocated.
    struct Span
    {
        uint8_t const* data = nullptr;
        size_t len = 0;
    };
    Span mask, signs, labelsPosSec, labelsNegSec, table, codes;
    for (Span* span : {&mask, &signs, &labelsPosSec, &labelsNegSec, &table, &codes})
    {
        if (!sections.next(&span->data, &span->len))
        {
            return SLICER_ERR_PAYLOAD;
        }
    }
    if (!sections.finished())
    {
        return SLICER_ERR_PAYLOAD;
    }
    std::vector<int64_t> const sizesPos = blockSizes(static_cast<int64_t>(keptCount - negCount), mPos);
    std::vector<int64_t> const sizesNeg = blockSizes(static_cast<int64_t>(negCount), mNeg);
    std::vector<int64_t> sizes(sizesPos);
    sizes.insert(sizes.end(), sizesNeg.begin(), sizesNeg.end());
    if (slicer_check_subset_length(mask.data, mask.len, keptCount, T) != SLICER_OK
        || slicer_check_subset_length(signs.data, signs.len, negCount, keptCount) != SLICER_OK
        || slicer_check_labels_length(labelsPosSec.len, keptCount - negCount, static_cast<int>(sizesPos.size()))
            != SLICER_OK
        || slicer_check_labels_length(labelsNegSec.len, negCount, static_cast<int>(sizesNeg.size())) != SLICER_OK
        || table.len != 9 * sizes.size())
    {
        return SLICER_ERR_PAYLOAD;
    }
    // --- block table (quant.read_group_table) ---
    float const top = dtype == 2 ? kFLOAT16_MAX : std::numeric_limits<float>::max();
    std::vector<int> q(sizes.size());
    std::vector<float> lo(sizes.size()), step(sizes.size());
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        uint8_t const* row = table.data + 9 * b;
        q[b] = row[0];
        lo[b] = readF32(row + 1);
        float const hi = readF32(row + 5);
        if (!std::isfinite(lo[b]) || !std::isfinite(hi) || lo[b] < 0.0f || hi < lo[b] || hi > top)
        {
            return SLICER_ERR_PAYLOAD;
        }
        if ((lo[b] == hi && q[b] != 0) || (lo[b] < hi && (q[b] < qMin || q[b] > qBits)))
        {
            return SLICER_ERR_PAYLOAD;
        }
        step[b] = stepOf(lo[b], hi, q[b]);
    }
    size_t need = 0;
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        need += packedNbytes(static_cast<uint64_t>(sizes[b]), q[b]);
    }
    if (codes.len != need)
    {
        return SLICER_ERR_PAYLOAD;
    }
    // --- positions and labels: the lengths hold, decode them ---
    kept->assign(keptCount ? keptCount : 1, 0);
    std::vector<int64_t> negSel(negCount ? negCount : 1);
    std::vector<uint8_t> labelsPos, labelsNeg;
    if (slicer_decode_subset(mask.data, mask.len, keptCount, T, kept->data()) != SLICER_OK
        || slicer_decode_subset(signs.data, signs.len, negCount, keptCount, negSel.data()) != SLICER_OK
        || !readLabels(labelsPosSec.data, labelsPosSec.len, sizesPos, &labelsPos)
        || !readLabels(labelsNegSec.data, labelsNegSec.len, sizesNeg, &labelsNeg))
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint8_t const* sec = codes.data;
    *ndim = dims;
    *dtypeCode = dtype;
    *elements = T;
    kept->resize(keptCount);
    values->resize(keptCount);
    // --- block b's values, in index order, at its kept positions ---
    std::vector<uint8_t> blockOf(keptCount);
    std::vector<uint8_t> isNeg(keptCount, 0);
    for (uint64_t j = 0; j < negCount; ++j)
    {
        isNeg[negSel[j]] = 1;
    }
    size_t nextPos = 0;
    size_t nextNeg = 0;
    for (uint64_t i = 0; i < keptCount; ++i)
    {
        blockOf[i] = isNeg[i] ? static_cast<uint8_t>(labelsNeg[nextNeg++] + sizesPos.size()) : labelsPos[nextPos++];
    }
    std::vector<BitReader> readers;
    size_t offset = 0;
    for (size_t b = 0; b < sizes.size(); ++b)
    {
        size_t const nbytes = packedNbytes(static_cast<uint64_t>(sizes[b]), q[b]);
        readers.emplace_back(sec + offset, nbytes);
        offset += nbytes;
    }
    for (uint64_t i = 0; i < keptCount; ++i)
    {
        size_t const b = blockOf[i];
        uint64_t code = 0;
        if (q[b] > 0)
        {
            readers[b].get(q[b], &code);
        }
        float const magnitude = clampFinite(static_cast<float>(code) * step[b] + lo[b]);
        (*values)[i] = b >= sizesPos.size() ? -magnitude : magnitude;
    }
    return SLICER_OK;
}

} // namespace
} // namespace slicer

extern "C" slicer_status slicer_decode_sparse_host(uint8_t const* payload, size_t len, slicer_limits const* limits,
    int64_t* positions, float* values, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements, uint64_t* keptCount)
{
    if (!payload || !limits || !shape || !ndim || !dtypeCode || !elements || !keptCount)
    {
        return SLICER_ERR_ARGUMENT;
    }
    std::vector<int64_t> kept;
    std::vector<float> decoded;
    slicer_status const status
        = slicer::decodeSparse(payload, len, limits, &kept, &decoded, shape, ndim, dtypeCode, elements);
    if (status != SLICER_OK)
    {
        return status;
    }
    *keptCount = kept.size();
    if (capacity < kept.size() || (!kept.empty() && (!positions || !values)))
    {
        return SLICER_ERR_CAPACITY;
    }
    std::copy(kept.begin(), kept.end(), positions);
    std::copy(decoded.begin(), decoded.end(), values);
    return SLICER_OK;
}

extern "C" slicer_status slicer_decode_host(uint8_t const* payload, size_t len, slicer_limits const* limits,
    float* out, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode, uint64_t* elements)
{
    if (!payload || !limits || !shape || !ndim || !dtypeCode || !elements)
    {
        return SLICER_ERR_ARGUMENT;
    }
    std::vector<int64_t> kept;
    std::vector<float> decoded;
    slicer_status const status
        = slicer::decodeSparse(payload, len, limits, &kept, &decoded, shape, ndim, dtypeCode, elements);
    if (status != SLICER_OK)
    {
        return status;
    }
    uint64_t const T = *elements;
    if (capacity < T || (T > 0 && !out))
    {
        return SLICER_ERR_CAPACITY;
    }
    std::fill(out, out + T, 0.0f);
    for (size_t i = 0; i < kept.size(); ++i)
    {
        out[kept[i]] = decoded[i];
    }
    return SLICER_OK;
}
