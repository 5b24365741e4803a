// The SLICER decoder as data-parallel stages, on the executors of
// parallel_encode.h: the frame is parsed by one thread (it is a few dozen bytes and
// a section table), every O(k) or O(T) check and the reconstruction run as maps,
// scans, a stable sort and reductions. It refuses exactly what the numpy decoder
// refuses (the CPU tests fuzz the host executor against it) and touches the output
// only after every check has passed.
#ifndef SLICER_PARALLEL_DECODE_H
#define SLICER_PARALLEL_DECODE_H

#include "parallel_encode.h"

namespace slicer
{
namespace par
{

constexpr int kMAX_BLOCKS = 128; // 64 per sign

SLICER_HD inline uint32_t readU32At(uint8_t const* p)
{
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16)
        | (static_cast<uint32_t>(p[3]) << 24);
}

SLICER_HD inline float readF32At(uint8_t const* p)
{
    uint32_t const bits = readU32At(p);
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
#endif
}

SLICER_HD inline float fmulAdd(float code, float step, float lo)
{
#if defined(__CUDA_ARCH__)
    return clampFinite(__fadd_rn(__fmul_rn(code, step), lo));
#else
    return clampFinite(code * step + lo); // built with -ffp-contract=off: two roundings, as numpy
#endif
}

SLICER_HD inline bool isFiniteF(float v)
{
    return v == v && v - v == 0.0f;
}

//! `width` bits (<= 64) at bit offset `bit` of a MSB-first stream.
SLICER_HD inline uint64_t readBits(uint8_t const* buf, uint64_t bit, int width)
{
    uint64_t v = 0;
    for (int i = 0; i < width; ++i, ++bit)
    {
        v = (v << 1) | ((buf[bit >> 3] >> (7 - (bit & 7))) & 1U);
    }
    return v;
}

SLICER_HD inline int popcount8(uint32_t byte)
{
    int n = 0;
    for (; byte; byte &= byte - 1)
    {
        ++n;
    }
    return n;
}

/*
 * Everything a single thread reads from the frame: header, knobs, the section table,
 * the meta section, the block table and the position sections' first bytes. The
 * executor copies it to the host in one piece.
 */
struct Frame
{
    int32_t status; // SLICER_OK, or the refusal
    int32_t dtype;
    int32_t ndim;
    uint32_t shape[8];
    uint64_t elements;
    uint64_t k; // floor((1 - s)·T)
    float sparsity;
    float lam;
    float delta;
    int32_t blocksPos;
    int32_t blocksNeg;
    int32_t qBits;
    int32_t qMin;
    uint64_t sectionAt[7];
    uint64_t sectionLen[7];
    uint32_t keptCount;
    uint32_t negCount;
    uint8_t subsetHead[2][9]; // method, then the Golomb m and U where present
    uint8_t table[9 * kMAX_BLOCKS];
};

//! The frame checks of the host decoder (wire.read_header, slicer.read_config), in its order.
SLICER_HD inline void parseFrame(uint8_t const* p, uint64_t len, uint64_t maxElements, uint64_t maxPayload, bool crcOk,
    Frame* f)
{
    f->status = SLICER_ERR_PAYLOAD;
    if (len > maxPayload || len < 16 || p[0] != 'S' || p[1] != 'L' || p[2] != 'C' || p[3] != 'R' || p[4] != 1)
    {
        return;
    }
    if (!crcOk)
    {
        return;
    }
    uint8_t const codec = p[5];
    f->dtype = p[6];
    f->ndim = p[7];
    uint32_t const flags = p[8] | (p[9] << 8);
    uint64_t const knobBytes = p[10] | (p[11] << 8);
    if (flags != 0 || (f->dtype != 1 && f->dtype != 2) || f->ndim > 8)
    {
        return;
    }
    uint64_t const shapeEnd = 12 + 4 * static_cast<uint64_t>(f->ndim);
    uint64_t const knobsEnd = shapeEnd + knobBytes;
    if (knobsEnd > len - 4)
    {
        return;
    }
    bool anyZero = false;
    for (int d = 0; d < f->ndim; ++d)
    {
        f->shape[d] = readU32At(p + 12 + 4 * d);
        anyZero = anyZero || f->shape[d] == 0;
    }
    uint64_t T = anyZero ? 0 : 1;
    for (int d = 0; d < f->ndim && !anyZero; ++d)
    {
        T *= f->shape[d];
        if (T > maxElements || T > 0xFFFFFFFFULL)
        {
            return;
        }
    }
    f->elements = T;
    if (codec != 1 || knobBytes != 16)
    {
        f->status = codec != 1 ? SLICER_ERR_ARGUMENT : SLICER_ERR_PAYLOAD; // SLICER payloads only
        return;
    }
    uint8_t const* kb = p + shapeEnd;
    f->sparsity = readF32At(kb);
    f->lam = readF32At(kb + 4);
    f->delta = readF32At(kb + 8);
    f->blocksPos = kb[12];
    f->blocksNeg = kb[13];
    f->qBits = kb[14];
    f->qMin = kb[15];
    if (!(f->sparsity >= 0.0f && f->sparsity < 1.0f && f->lam > -1.0f && f->lam < 1.0f && isFiniteF(f->delta)
            && f->delta >= 0.0f)
        || f->blocksPos < 1 || f->blocksPos > 64 || f->blocksNeg < 1 || f->blocksNeg > 64 || f->qMin < 1
        || f->qMin > f->qBits || f->qBits > 16)
    {
        return;
    }
    f->k = keptCount(f->sparsity, T);
    // The section table: seven length-prefixed sections, then the CRC, nothing else.
    uint64_t at = knobsEnd;
    uint64_t const end = len - 4;
    for (int s = 0; s < 7; ++s)
    {
        if (at + 4 > end)
        {
            return;
        }
        uint64_t const length = readU32At(p + at);
        if (length > end - (at + 4))
        {
            return;
        }
        f->sectionAt[s] = at + 4;
        f->sectionLen[s] = length;
        at += 4 + length;
    }
    if (at != end || f->sectionLen[0] != 8)
    {
        return;
    }
    f->keptCount = readU32At(p + f->sectionAt[0]);
    f->negCount = readU32At(p + f->sectionAt[0] + 4);
    if (f->keptCount > f->k || f->negCount > f->keptCount)
    {
        return;
    }
    for (int s = 0; s < 2; ++s)
    {
        for (int i = 0; i < 9; ++i)
        {
            f->subsetHead[s][i] = i < static_cast<int>(f->sectionLen[1 + s]) ? p[f->sectionAt[1 + s] + i] : 0;
        }
    }
    uint64_t const posCount = f->keptCount - f->negCount;
    uint64_t const blocks = (posCount < static_cast<uint64_t>(f->blocksPos) ? posCount : f->blocksPos)
        + (f->negCount < static_cast<uint32_t>(f->blocksNeg) ? f->negCount : f->blocksNeg);
    if (f->sectionLen[5] != 9 * blocks)
    {
        return;
    }
    for (uint64_t i = 0; i < 9 * blocks; ++i)
    {
        f->table[i] = p[f->sectionAt[5] + i];
    }
    f->status = SLICER_OK; // the rest is checked by the stages
}

//! Positions of the set bits among the first `nbits` bits of a stream, in order.
template <typename Exec>
bool setBitPositions(Exec& ex, uint8_t const* stream, uint64_t nbits, uint64_t expected, int64_t* out)
{
    Arena& arena = ex.arena();
    Arena::Scope temporaries(arena);
    uint64_t const bytes = packedBytes(nbits, 1);
    uint32_t* counts = arena.template take<uint32_t>(bytes);
    uint32_t* starts = arena.template take<uint32_t>(bytes);
    if (arena.failed())
    {
        return false;
    }
    ex.forEach(bytes, [=] SLICER_HD(uint64_t B) {
        uint32_t byte = stream[B];
        uint64_t const valid = nbits - 8 * B < 8 ? nbits - 8 * B : 8;
        byte &= (0xFF00U >> valid) & 0xFFU; // the bits before nbits
        counts[B] = static_cast<uint32_t>(popcount8(byte));
    });
    uint64_t const total = ex.sum(bytes, [=] SLICER_HD(uint64_t B) { return uint64_t{counts[B]}; });
    if (total != expected)
    {
        return false;
    }
    ex.exclusiveScanU32(counts, starts, bytes);
    ex.forEach(bytes, [=] SLICER_HD(uint64_t B) {
        uint64_t at = starts[B];
        for (int j = 0; j < 8; ++j)
        {
            uint64_t const bit = 8 * B + j;
            if (bit < nbits && ((stream[B] >> (7 - j)) & 1U))
            {
                out[at++] = static_cast<int64_t>(bit);
            }
        }
    });
    return true;
}

//! Whether the bits from `from` to the end of the last byte of a `bytes`-long stream are zero.
template <typename Exec>
bool zeroTail(Exec& ex, uint8_t const* stream, uint64_t bytes, uint64_t from)
{
    if (from % 8 == 0 || from >= 8 * bytes)
    {
        return true;
    }
    uint8_t last = 0;
    ex.toHost(&last, stream + from / 8, 1);
    return (last & (0xFFU >> (from % 8))) == 0;
}

/*
 * A position section (slicer_decode_subset's checks): `count` indices in [0, space)
 * into `out`. `head` is the section's first 9 bytes, already on the host.
 */
template <typename Exec>
bool decodeSubset(Exec& ex, uint8_t const* section, uint64_t len, uint8_t const* head, uint64_t count, uint64_t space,
    int64_t* out)
{
    if (len < 1 || count > space)
    {
        return false;
    }
    int const method = head[0];
    uint8_t const* body = section + 1;
    uint64_t const bodyLen = len - 1;
    if (method == SLICER_SUBSET_TRIVIAL)
    {
        if ((count != 0 && count != space) || bodyLen != 0)
        {
            return false;
        }
        ex.forEach(count, [=] SLICER_HD(uint64_t i) { out[i] = static_cast<int64_t>(i); });
        return true;
    }
    if (count == 0 || count == space)
    {
        return false;
    }
    Arena& arena = ex.arena();
    if (method == SLICER_SUBSET_BITMAP)
    {
        // Every set bit, padding included, must be one of the `count` positions below space.
        return bodyLen == packedBytes(space, 1) && zeroTail(ex, body, bodyLen, space)
            && setBitPositions(ex, body, space, count, out);
    }
    if (method == SLICER_SUBSET_FIXED)
    {
        int const width = std::max(1, bitLength(space - 1));
        if (bodyLen != packedBytes(count, width))
        {
            return false;
        }
        ex.forEach(count, [=] SLICER_HD(uint64_t i) { out[i] = static_cast<int64_t>(readBits(body, i * width, width)); });
        uint64_t const bad = ex.sum(count, [=] SLICER_HD(uint64_t i) {
            return (static_cast<uint64_t>(out[i]) >= space || (i > 0 && out[i] <= out[i - 1])) ? 1ULL : 0ULL;
        });
        return bad == 0;
    }
    if (method != SLICER_SUBSET_GOLOMB && method != SLICER_SUBSET_GOLOMB_COMPLEMENT)
    {
        return false;
    }
    bool const complement = method == SLICER_SUBSET_GOLOMB_COMPLEMENT;
    uint64_t const coded = complement ? space - count : count;
    if (bodyLen < 8)
    {
        return false;
    }
    uint64_t const m = readU32At(head + 1);
    uint64_t const unaryBits = readU32At(head + 5);
    if (m < 1 || m > space || unaryBits < coded || (unaryBits - coded) > space / m)
    {
        return false;
    }
    GolombShape const shape = golombShape(m);
    uint64_t const unaryBytes = packedBytes(unaryBits, 1);
    uint64_t const fieldBytes = m == 1 ? 0 : packedBytes(coded, shape.width);
    if (bodyLen < 8 + unaryBytes + fieldBytes)
    {
        return false;
    }
    uint8_t const* unary = body + 8;
    uint8_t const* fields = unary + unaryBytes;
    uint8_t const* extra = fields + fieldBytes;
    uint64_t const extraLen = bodyLen - 8 - unaryBytes - fieldBytes;
    if (m == 1 && extraLen != 0)
    {
        return false; // m = 1 has no fields and no extra bits: nothing may follow the unary stream
    }
    Arena::Scope temporaries(arena);
    int64_t* ones = arena.template take<int64_t>(coded);
    int64_t* positions = arena.template take<int64_t>(coded);
    if (arena.failed())
    {
        return false;
    }
    // The unary stream holds exactly `coded` ones, the last at bit U-1, zeros after.
    if (!zeroTail(ex, unary, unaryBytes, unaryBits) || !setBitPositions(ex, unary, unaryBits, coded, ones))
    {
        return false;
    }
    int64_t lastOne = -1;
    ex.toHost(&lastOne, ones + coded - 1, sizeof(int64_t));
    if (static_cast<uint64_t>(lastOne) != unaryBits - 1)
    {
        return false;
    }
    uint64_t* gaps = arena.template take<uint64_t>(coded);
    uint64_t* steps = arena.template take<uint64_t>(coded);
    if (arena.failed())
    {
        return false;
    }
    if (m == 1)
    {
        ex.forEach(coded, [=] SLICER_HD(uint64_t j) {
            gaps[j] = static_cast<uint64_t>(ones[j] - (j ? ones[j - 1] + 1 : 0));
        });
    }
    else
    {
        int const width = shape.width;
        uint64_t const u = shape.u;
        uint32_t* isLong = arena.template take<uint32_t>(coded);
        uint32_t* extraAt = arena.template take<uint32_t>(coded);
        if (arena.failed())
        {
            return false;
        }
        ex.forEach(coded, [=] SLICER_HD(uint64_t j) {
            isLong[j] = readBits(fields, j * width, width) >= u ? 1U : 0U;
        });
        ex.exclusiveScanU32(isLong, extraAt, coded);
        uint64_t const longCount = ex.sum(coded, [=] SLICER_HD(uint64_t j) { return uint64_t{isLong[j]}; });
        if (packedBytes(longCount, 1) != extraLen || !zeroTail(ex, extra, extraLen, longCount))
        {
            return false;
        }
        ex.forEach(coded, [=] SLICER_HD(uint64_t j) {
            uint64_t const field = readBits(fields, j * width, width);
            uint64_t remainder = field;
            if (isLong[j])
            {
                uint64_t const e = (extra[extraAt[j] >> 3] >> (7 - (extraAt[j] & 7))) & 1U;
                remainder = ((field << 1) | e) - u;
            }
            uint64_t const quotient = static_cast<uint64_t>(ones[j] - (j ? ones[j - 1] + 1 : 0));
            // A remainder >= m is refused below; the gap is then never used.
            gaps[j] = remainder < m ? quotient * m + remainder : ~0ULL;
        });
        uint64_t const bad = ex.sum(coded, [=] SLICER_HD(uint64_t j) { return gaps[j] == ~0ULL ? 1ULL : 0ULL; });
        if (bad)
        {
            return false;
        }
    }
    // position_j = position_{j-1} + 1 + gap_j: an inclusive scan of gap + 1, less one.
    ex.forEach(coded, [=] SLICER_HD(uint64_t j) { steps[j] = gaps[j] + 1; });
    ex.exclusiveScanU64(steps, gaps, coded);
    ex.forEach(coded, [=] SLICER_HD(uint64_t j) { positions[j] = static_cast<int64_t>(gaps[j] + steps[j]) - 1; });
    int64_t last = 0;
    ex.toHost(&last, positions + coded - 1, sizeof(int64_t));
    if (last >= static_cast<int64_t>(space))
    {
        return false;
    }
    if (!complement)
    {
        ex.forEach(coded, [=] SLICER_HD(uint64_t j) { out[j] = positions[j]; });
        return true;
    }
    // The set is everything in [0, space) the code does not name.
    uint8_t* named = arena.template take<uint8_t>(space);
    uint32_t* outside = arena.template take<uint32_t>(space);
    uint32_t* rank = arena.template take<uint32_t>(space);
    if (arena.failed())
    {
        return false;
    }
    ex.zero(named, space);
    ex.forEach(coded, [=] SLICER_HD(uint64_t j) { named[positions[j]] = 1; });
    ex.forEach(space, [=] SLICER_HD(uint64_t p) { outside[p] = named[p] ? 0U : 1U; });
    ex.exclusiveScanU32(outside, rank, space);
    ex.forEach(space, [=] SLICER_HD(uint64_t p) {
        if (!named[p])
        {
            out[rank[p]] = static_cast<int64_t>(p);
        }
    });
    return true;
}

/*
 * Decode into `out` (executor memory, `capacity` floats): the kept values at their
 * positions, zeros elsewhere; shape, dtype and element count to the host outputs.
 */
template <typename Exec>
slicer_status decodePayload(Exec& ex, uint8_t const* payload, uint64_t len, slicer_limits const& limits, float* out,
    uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode, uint64_t* elements)
{
    Arena& arena = ex.arena();
    Frame* dFrame = arena.template take<Frame>(1);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    bool const crcOk = len >= 16 && len <= limits.maxPayloadBytes
        && chunkedCrc32(ex, payload, len - 4) == [&] {
               uint8_t tail[4];
               ex.toHost(tail, payload + len - 4, 4);
               return readU32At(tail);
           }();
    uint64_t const maxElements = limits.maxElements;
    uint64_t const maxPayload = limits.maxPayloadBytes;
    ex.forEach(1, [=] SLICER_HD(uint64_t) { parseFrame(payload, len, maxElements, maxPayload, crcOk, dFrame); });
    Frame f;
    ex.toHost(&f, dFrame, sizeof(Frame));
    if (f.status != SLICER_OK)
    {
        return static_cast<slicer_status>(f.status);
    }
    uint64_t const T = f.elements;
    uint64_t const k = f.keptCount;
    uint64_t const negCount = f.negCount;
    uint64_t const posCount = k - negCount;
    // --- positions ---
    int64_t* kept = arena.template take<int64_t>(k);
    int64_t* negSel = arena.template take<int64_t>(negCount);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    if (!decodeSubset(ex, payload + f.sectionAt[1], f.sectionLen[1], f.subsetHead[0], k, T, kept)
        || !decodeSubset(ex, payload + f.sectionAt[2], f.sectionLen[2], f.subsetHead[1], negCount, k, negSel))
    {
        return arena.failed() ? SLICER_ERR_CAPACITY : SLICER_ERR_PAYLOAD;
    }
    // --- blocks and the table ---
    uint64_t const nbPos = std::min<uint64_t>(static_cast<uint64_t>(f.blocksPos), posCount);
    uint64_t const nbNeg = std::min<uint64_t>(static_cast<uint64_t>(f.blocksNeg), negCount);
    uint64_t const nb = nbPos + nbNeg;
    float const top = f.dtype == 2 ? 65504.0f : 3.40282347e+38f;
    std::vector<int> q(nb);
    std::vector<float> lo(nb), step(nb);
    std::vector<uint64_t> size(nb), blockStart(nb + 1, 0), valueOffset(nb + 1, 0);
    for (uint64_t B = 0; B < nb; ++B)
    {
        uint64_t const n = B < nbPos ? posCount : negCount;
        uint64_t const blocks = B < nbPos ? nbPos : nbNeg;
        uint64_t const b = B < nbPos ? B : B - nbPos;
        size[B] = b + 1 == blocks ? n - (n / blocks) * (blocks - 1) : n / blocks;
        q[B] = f.table[9 * B];
        lo[B] = readF32At(f.table + 9 * B + 1);
        float const hi = readF32At(f.table + 9 * B + 5);
        if (!isFiniteF(lo[B]) || !isFiniteF(hi) || lo[B] < 0.0f || hi < lo[B] || hi > top
            || (lo[B] == hi && q[B] != 0) || (lo[B] < hi && (q[B] < f.qMin || q[B] > f.qBits)))
        {
            return SLICER_ERR_PAYLOAD;
        }
        step[B] = stepOf(lo[B], hi, q[B]);
        blockStart[B + 1] = blockStart[B] + size[B];
        valueOffset[B + 1] = valueOffset[B] + packedBytes(size[B], q[B]);
    }
    if (f.sectionLen[6] != valueOffset[nb])
    {
        return SLICER_ERR_PAYLOAD;
    }
    // --- labels: mixed-radix words per sign, then each block's count ---
    uint8_t* labels[2] = {arena.template take<uint8_t>(posCount), arena.template take<uint8_t>(negCount)};
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    for (int s = 0; s < 2; ++s)
    {
        uint64_t const n = s == 0 ? posCount : negCount;
        uint64_t const base = s == 0 ? nbPos : nbNeg;
        uint8_t const* section = payload + f.sectionAt[3 + s];
        uint64_t const sectionLen = f.sectionLen[3 + s];
        uint8_t* out8 = labels[s];
        if (base <= 1 || n == 0)
        {
            if (sectionLen != 0)
            {
                return SLICER_ERR_PAYLOAD;
            }
            ex.zero(out8, n);
            continue;
        }
        int per = 0;
        int bits = 0;
        slicer_label_chunk(static_cast<int>(base), &per, &bits);
        uint64_t const words = (n + per - 1) / per;
        if (sectionLen != packedBytes(words, bits))
        {
            return SLICER_ERR_PAYLOAD;
        }
        // base^per, or 0 where it is 2^64 (every 64-bit word is then below it).
        uint64_t limit = 1;
        for (int j = 0; j < per; ++j)
        {
            limit = limit * base; // wraps to 0 exactly when base^per = 2^64 (base a power of two)
        }
        uint64_t const bad = ex.sum(words, [=] SLICER_HD(uint64_t w) {
            uint64_t acc = readBits(section, w * bits, bits);
            if (limit != 0 && acc >= limit)
            {
                return 1ULL; // a word beyond base^per
            }
            uint64_t wrong = 0;
            for (int j = per - 1; j >= 0; --j)
            {
                uint64_t const digit = acc % base;
                acc /= base;
                uint64_t const i = w * per + j;
                if (i < n)
                {
                    out8[i] = static_cast<uint8_t>(digit);
                }
                else if (digit != 0)
                {
                    wrong = 1; // padding labels must be zero
                }
            }
            return static_cast<unsigned long long>(wrong);
        });
        if (bad)
        {
            return SLICER_ERR_PAYLOAD;
        }
    }
    // --- each kept value's block, its place in the block (index order), the scatter ---
    uint8_t* isNeg = arena.template take<uint8_t>(k);
    uint32_t* negFlag = arena.template take<uint32_t>(k);
    uint32_t* negRank = arena.template take<uint32_t>(k);
    uint8_t* blockOf = arena.template take<uint8_t>(k);
    uint8_t* blockSorted = arena.template take<uint8_t>(k);
    uint32_t* iota = arena.template take<uint32_t>(k);
    uint32_t* byBlock = arena.template take<uint32_t>(k);
    uint64_t* dStart = arena.template take<uint64_t>(nb + 1);
    uint64_t* dOffset = arena.template take<uint64_t>(nb + 1);
    int* dQ = arena.template take<int>(nb + 1);
    float* dLo = arena.template take<float>(nb + 1);
    float* dStep = arena.template take<float>(nb + 1);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    ex.zero(isNeg, k);
    ex.forEach(negCount, [=] SLICER_HD(uint64_t j) { isNeg[negSel[j]] = 1; });
    ex.forEach(k, [=] SLICER_HD(uint64_t i) { negFlag[i] = isNeg[i]; });
    ex.exclusiveScanU32(negFlag, negRank, k);
    uint8_t const* posLabels = labels[0];
    uint8_t const* negLabels = labels[1];
    uint8_t const nbPosByte = static_cast<uint8_t>(nbPos);
    ex.forEach(k, [=] SLICER_HD(uint64_t i) {
        blockOf[i] = negFlag[i] ? static_cast<uint8_t>(negLabels[negRank[i]] + nbPosByte) : posLabels[i - negRank[i]];
        iota[i] = static_cast<uint32_t>(i);
    });
    ex.sortByByte(blockOf, blockSorted, iota, byBlock, k, bitLength(nb));
    ex.toDevice(dStart, blockStart.data(), (nb + 1) * sizeof(uint64_t));
    ex.toDevice(dOffset, valueOffset.data(), (nb + 1) * sizeof(uint64_t));
    if (nb > 0)
    {
        ex.toDevice(dQ, q.data(), nb * sizeof(int));
        ex.toDevice(dLo, lo.data(), nb * sizeof(float));
        ex.toDevice(dStep, step.data(), nb * sizeof(float));
    }
    uint64_t const blocks = nb;
    if (nb > 1)
    {
        // Equal-cardinality blocks: sorted by block, rank p must sit in the block that owns it.
        uint64_t const misplaced = ex.sum(k, [=] SLICER_HD(uint64_t p) {
            uint64_t B = 0;
            while (B + 1 < blocks && dStart[B + 1] <= p)
            {
                ++B;
            }
            return blockSorted[p] == B ? 0ULL : 1ULL;
        });
        if (misplaced)
        {
            return SLICER_ERR_PAYLOAD;
        }
    }
    // Every check has passed: now the output.
    *elements = T;
    if (T > capacity || (T > 0 && !out))
    {
        return SLICER_ERR_CAPACITY;
    }
    ex.zero(out, T * sizeof(float));
    uint8_t const* values = payload + f.sectionAt[6];
    ex.forEach(k, [=] SLICER_HD(uint64_t p) {
        uint64_t const B = blockSorted[p];
        uint32_t const i = byBlock[p];
        int const bits = dQ[B];
        uint64_t const code = bits > 0 ? readBits(values + dOffset[B], (p - dStart[B]) * bits, bits) : 0;
        float const magnitude = fmulAdd(static_cast<float>(code), dStep[B], dLo[B]);
        out[kept[i]] = negFlag[i] ? -magnitude : magnitude;
    });
    *ndim = f.ndim;
    *dtypeCode = f.dtype;
    *elements = T;
    for (int d = 0; d < f.ndim; ++d)
    {
        shape[d] = f.shape[d];
    }
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    return ex.ok() ? SLICER_OK : SLICER_ERR_CUDA;
}

//! Workspace bytes decodePayload needs for up to T elements and `len`-byte payloads.
inline size_t decodeWorkspaceBound(uint64_t T, uint64_t len)
{
    return static_cast<size_t>(96 * T + 16 * len) + (size_t{2} << 20);
}

} // namespace par
} // namespace slicer

#endif // SLICER_PARALLEL_DECODE_H
