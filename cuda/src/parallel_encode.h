// The SLICER encoder after ATKF, written as data-parallel stages: maps over
// elements, scans, stable sorts, reductions and byte-parallel gathers. One template
// runs on two executors: HostExec (exec_host.h: loops and std algorithms; what the
// CPU tests hold byte for byte to the numpy reference) and CudaExec (exec_cuda.cuh:
// kernels and CUB). The per-element work is SLICER_HD code shared by both, so a CPU
// test checks every offset, rank and bit the GPU computes; what only the GPU run
// checks is the executor itself.
//
// Stages (k kept values, ascending flat indices), in the order they run:
//   1 sign split         scan of the negative flags; sign-local magnitudes
//   2 magnitude blocks   stable sort by magnitude (descending) per sign; a rank's
//                        block is closed-form; block lo/hi are the sorted ends
//   3 DS bit choice      per (block, trial q) mismatch sums, one segment each;
//                        the q rule itself runs on the host (<= 128 blocks)
//   4 plan               every section's size (position methods chosen by sizes
//                        from one multi-sum pass), so that nothing is written twice
//   5 frame              header, length prefixes, meta and block table from the host
//   6 positions          bitmap / fixed / Golomb (or of the complement) by gathers;
//                        Golomb's unary stream from a scan and binary searches
//   7 labels             mixed-radix words, then a gather
//   8 values             stable sort by block gives each value's place; every
//                        output byte gathers its bits (no atomics)
//   9 CRC-32             per-1 KiB CRCs, folded by zlib's crc32_combine algebra
#ifndef SLICER_PARALLEL_ENCODE_H
#define SLICER_PARALLEL_ENCODE_H

#include "codec_math.h"
#include "slicer_codec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace slicer
{
namespace par
{

constexpr int kMAX_TRIALS = 16;       // q from 1 to 16
constexpr double kGOLOMB_MAX_DENSITY = 0.4; // as positions.cpp: past it a bitmap is never larger

//! A bump allocator over one caller allocation (the workspace-size query bounds it).
class Arena
{
public:
    Arena(void* base, size_t bytes)
        : mBase(static_cast<uint8_t*>(base))
        , mBytes(bytes)
    {
    }

    template <typename T>
    T* take(uint64_t count)
    {
        size_t const need = align(static_cast<size_t>(count ? count : 1) * sizeof(T));
        if (mFailed || mUsed + need > mBytes)
        {
            mFailed = true;
            return nullptr;
        }
        T* p = reinterpret_cast<T*>(mBase + mUsed);
        mUsed += need;
        return p;
    }

    bool failed() const
    {
        return mFailed;
    }

    //! Frees what was taken during its lifetime. On the GPU that is safe in stream
    //! order: later work that reuses the bytes is enqueued after the work that used them.
    class Scope
    {
    public:
        explicit Scope(Arena& arena)
            : mArena(arena)
            , mMark(arena.mUsed)
        {
        }
        ~Scope()
        {
            mArena.mUsed = mMark;
        }
        Scope(Scope const&) = delete;
        Scope& operator=(Scope const&) = delete;

    private:
        Arena& mArena;
        size_t mMark;
    };

    static size_t align(size_t bytes)
    {
        return (bytes + 255) & ~static_cast<size_t>(255);
    }

private:
    uint8_t* mBase;
    size_t mBytes;
    size_t mUsed{0};
    bool mFailed{false};
};

// --- per-element arithmetic: codec_math.h, shared with the host coders ---------------

//! Byte B of a stream of `count` fields of `width` bits (MSB first); field(e) gives field e.
template <typename Field>
SLICER_HD inline uint8_t gatherByte(uint64_t B, int width, uint64_t count, Field const& field)
{
    uint64_t const first = 8 * B;
    uint32_t byte = 0;
    for (uint64_t bit = first; bit < first + 8; ++bit)
    {
        uint64_t const e = bit / static_cast<uint64_t>(width);
        if (e >= count)
        {
            break;
        }
        int const within = static_cast<int>(bit - e * static_cast<uint64_t>(width));
        uint64_t const value = field(e);
        if ((value >> (width - 1 - within)) & 1U)
        {
            byte |= 0x80U >> (bit - first);
        }
    }
    return static_cast<uint8_t>(byte);
}

// --- CRC-32 (zlib's) in chunks: each chunk's CRC, then combined ----------------------

constexpr uint32_t kCRC_POLY = 0xEDB88320U; // reflected
constexpr uint64_t kCRC_CHUNK = 1024;

SLICER_HD inline uint32_t crc32Bytes(uint8_t const* data, uint64_t len)
{
    uint32_t c = 0xFFFFFFFFU;
    for (uint64_t i = 0; i < len; ++i)
    {
        c ^= data[i];
        for (int k = 0; k < 8; ++k)
        {
            c = (c & 1U) ? (c >> 1) ^ kCRC_POLY : c >> 1;
        }
    }
    return c ^ 0xFFFFFFFFU;
}

//! a(x)·b(x) mod p(x), reflected (bit 31 is x^0); a must not be zero.
SLICER_HD inline uint32_t multModP(uint32_t a, uint32_t b)
{
    uint32_t m = 1U << 31;
    uint32_t p = 0;
    for (;;)
    {
        if (a & m)
        {
            p ^= b;
            if ((a & (m - 1)) == 0)
            {
                break;
            }
        }
        m >>= 1;
        b = (b & 1U) ? (b >> 1) ^ kCRC_POLY : b >> 1;
    }
    return p;
}

//! x^(8·bytes) mod p(x): the operator that appends `bytes` bytes to a CRC.
SLICER_HD inline uint32_t crcShift(uint64_t bytes)
{
    uint32_t power = 1U << 31; // x^0
    uint32_t square = 1U << 23; // x^8
    while (bytes)
    {
        if (bytes & 1U)
        {
            power = multModP(square, power);
        }
        square = multModP(square, square);
        bytes >>= 1;
    }
    return power;
}

//! CRC of A‖B from CRC(A), CRC(B) and |B| (zlib's crc32_combine).
SLICER_HD inline uint32_t crc32Combine(uint32_t crcA, uint32_t crcB, uint64_t lenB)
{
    return multModP(crcShift(lenB), crcA) ^ crcB;
}

template <typename Exec>
uint32_t chunkedCrc32(Exec& ex, uint8_t const* data, uint64_t len)
{
    Arena& arena = ex.arena();
    Arena::Scope temporaries(arena);
    uint64_t const chunks = (len + kCRC_CHUNK - 1) / kCRC_CHUNK;
    uint32_t* crcs = arena.template take<uint32_t>(chunks + 1);
    if (arena.failed() || len == 0)
    {
        return 0; // zlib.crc32(b"") is 0; a failed arena is reported by the caller
    }
    ex.forEach(chunks, [=] SLICER_HD(uint64_t c) {
        uint64_t const begin = c * kCRC_CHUNK;
        uint64_t const end = begin + kCRC_CHUNK < len ? begin + kCRC_CHUNK : len;
        crcs[c] = crc32Bytes(data + begin, end - begin);
    });
    // One thread folds the chunk CRCs left to right (chunks are 1 KiB: a 16 MB payload is 16 Ki folds).
    ex.forEach(1, [=] SLICER_HD(uint64_t) {
        uint32_t const fullShift = crcShift(kCRC_CHUNK);
        uint32_t acc = crcs[0];
        for (uint64_t c = 1; c < chunks; ++c)
        {
            uint64_t const size = c + 1 < chunks ? kCRC_CHUNK : len - c * kCRC_CHUNK;
            acc = multModP(size == kCRC_CHUNK ? fullShift : crcShift(size), acc) ^ crcs[c];
        }
        crcs[chunks] = acc;
    });
    uint32_t crc = 0;
    ex.toHost(&crc, crcs + chunks, 4);
    return crc;
}

// --- host-side helpers ---------------------------------------------------------------

//! The knob ranges every encoder entry point accepts (SlicerConfig's).
using slicer::knobsValid;

inline void putU32(uint8_t* p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
    {
        p[i] = static_cast<uint8_t>(v >> (8 * i));
    }
}

inline void putF32(uint8_t* p, float v)
{
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    putU32(p, bits);
}

//! One position section, planned (method, sizes) before anything is written.
struct SubsetPlan
{
    int method{SLICER_SUBSET_TRIVIAL};
    uint64_t bytes{1};
    uint64_t count{0};
    uint64_t space{0};
    int width{0};                 // fixed: bits per index
    bool complement{false};
    uint64_t modulus{0};
    uint64_t gapCount{0};
    uint64_t unaryBits{0};
    uint64_t extraCount{0};
    uint64_t const* gaps{nullptr}; // device/executor memory, gapCount entries
};

//! Plan a subset section of the sorted `indices` (count of them) in [0, space).
template <typename Exec>
SubsetPlan planSubset(Exec& ex, int64_t const* indices, uint64_t count, uint64_t space)
{
    SubsetPlan plan;
    plan.count = count;
    plan.space = space;
    if (count == 0 || count == space)
    {
        return plan;
    }
    plan.width = std::max(1, bitLength(space - 1));
    plan.method = SLICER_SUBSET_BITMAP;
    plan.bytes = 1 + packedBytes(space, 1);
    if (1 + packedBytes(count, plan.width) < plan.bytes)
    {
        plan.method = SLICER_SUBSET_FIXED;
        plan.bytes = 1 + packedBytes(count, plan.width);
    }
    if (static_cast<double>(std::min(count, space - count)) > kGOLOMB_MAX_DENSITY * static_cast<double>(space))
    {
        return plan;
    }
    // Gaps of the set, or of its complement when that is the smaller one.
    plan.complement = 2 * count > space;
    Arena& arena = ex.arena();
    uint64_t const gapCount = plan.complement ? space - count : count;
    uint64_t* gaps = arena.template take<uint64_t>(gapCount);
    uint64_t* lastComplement = arena.template take<uint64_t>(1);
    if (arena.failed())
    {
        return plan;
    }
    if (plan.complement)
    {
        Arena::Scope temporaries(arena);
        uint8_t* member = arena.template take<uint8_t>(space);
        uint32_t* outside = arena.template take<uint32_t>(space);
        uint32_t* rank = arena.template take<uint32_t>(space);
        if (arena.failed())
        {
            return plan;
        }
        ex.zero(member, space);
        ex.forEach(count, [=] SLICER_HD(uint64_t i) { member[indices[i]] = 1; });
        ex.forEach(space, [=] SLICER_HD(uint64_t p) { outside[p] = member[p] ? 0U : 1U; });
        ex.exclusiveScanU32(outside, rank, space);
        // The complement's p-th element, then its gap: elements of the set between it and the previous one.
        uint64_t* positions = arena.template take<uint64_t>(gapCount);
        if (arena.failed())
        {
            return plan;
        }
        ex.forEach(space, [=] SLICER_HD(uint64_t p) {
            if (!member[p])
            {
                positions[rank[p]] = p;
            }
        });
        ex.forEach(gapCount, [=] SLICER_HD(uint64_t j) {
            int64_t const previous = j == 0 ? -1 : static_cast<int64_t>(positions[j - 1]);
            gaps[j] = static_cast<uint64_t>(static_cast<int64_t>(positions[j]) - previous - 1);
            if (j + 1 == gapCount)
            {
                *lastComplement = positions[j];
            }
        });
    }
    else
    {
        ex.forEach(gapCount, [=] SLICER_HD(uint64_t j) {
            int64_t const previous = j == 0 ? -1 : indices[j - 1];
            gaps[j] = static_cast<uint64_t>(indices[j] - previous - 1);
        });
    }
    // The gaps sum to (last coded position + 1) - gapCount: no reduction needed.
    int64_t lastCoded = 0;
    ex.toHost(&lastCoded, plan.complement ? reinterpret_cast<int64_t const*>(lastComplement) : indices + count - 1,
        sizeof(int64_t));
    uint64_t const gapSum = static_cast<uint64_t>(lastCoded + 1) - gapCount;
    // The modulus near the geometric optimum with the fewest bytes (positions.cpp bestModulus).
    double const mean = static_cast<double>(gapSum) / static_cast<double>(gapCount);
    double const q = mean / (mean + 1.0);
    uint64_t guess = 1;
    if (q > 0.0)
    {
        guess = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(std::log(1.0 + q) / -std::log(q))));
    }
    uint64_t const lowest = std::max<uint64_t>(1, guess - 1);
    // For the (up to) three candidate moduli at once: the quotient sum and the long-code count.
    uint64_t candidate[6] = {0, 0, 0, 0, 0, 0};
    ex.template sums<6>(gapCount, candidate, [=] SLICER_HD(uint64_t j, uint64_t* acc) {
        for (int c = 0; c < 3; ++c)
        {
            uint64_t const m = lowest + c;
            acc[2 * c] += gaps[j] / m;
            acc[2 * c + 1] += gaps[j] % m >= golombShape(m).u ? 1U : 0U;
        }
    });
    uint64_t bestM = 0;
    uint64_t bestBytes = 0;
    uint64_t bestUnary = 0;
    uint64_t bestExtra = 0;
    for (uint64_t m = lowest; m <= guess + 1; ++m)
    {
        GolombShape const shape = golombShape(m);
        uint64_t unary = gapCount;
        uint64_t extra = 0;
        if (m == 1)
        {
            unary += gapSum;
        }
        else
        {
            unary += candidate[2 * (m - lowest)];
            extra = candidate[2 * (m - lowest) + 1];
        }
        uint64_t const bytes = 1 + 8 + packedBytes(unary, 1) + packedBytes(gapCount, shape.width)
            + packedBytes(extra, 1);
        if (bestM == 0 || bytes < bestBytes)
        {
            bestM = m;
            bestBytes = bytes;
            bestUnary = unary;
            bestExtra = extra;
        }
    }
    if (bestBytes < plan.bytes)
    {
        plan.method = plan.complement ? SLICER_SUBSET_GOLOMB_COMPLEMENT : SLICER_SUBSET_GOLOMB;
        plan.bytes = bestBytes;
        plan.modulus = bestM;
        plan.gapCount = gapCount;
        plan.unaryBits = bestUnary;
        plan.extraCount = bestExtra;
        plan.gaps = gaps;
    }
    return plan;
}

//! Write a planned subset section at `out` (executor memory, plan.bytes long).
template <typename Exec>
void writeSubset(Exec& ex, SubsetPlan const& plan, int64_t const* indices, uint8_t* out)
{
    uint8_t const method = static_cast<uint8_t>(plan.method);
    ex.toDevice(out, &method, 1);
    if (plan.method == SLICER_SUBSET_TRIVIAL)
    {
        return;
    }
    Arena& arena = ex.arena();
    Arena::Scope temporaries(arena);
    uint8_t* body = out + 1;
    uint64_t const count = plan.count;
    if (plan.method == SLICER_SUBSET_BITMAP)
    {
        uint8_t* member = arena.template take<uint8_t>(plan.space);
        if (arena.failed())
        {
            return;
        }
        ex.zero(member, plan.space);
        ex.forEach(count, [=] SLICER_HD(uint64_t i) { member[indices[i]] = 1; });
        uint64_t const space = plan.space;
        ex.forEach(packedBytes(space, 1), [=] SLICER_HD(uint64_t B) {
            body[B] = gatherByte(B, 1, space, [=](uint64_t e) { return uint64_t{member[e]}; });
        });
        return;
    }
    if (plan.method == SLICER_SUBSET_FIXED)
    {
        int const width = plan.width;
        ex.forEach(packedBytes(count, width), [=] SLICER_HD(uint64_t B) {
            body[B] = gatherByte(B, width, count, [=](uint64_t e) { return static_cast<uint64_t>(indices[e]); });
        });
        return;
    }
    // Golomb: m, U, then the unary, field and extra-bit streams.
    uint8_t header[8];
    putU32(header, static_cast<uint32_t>(plan.modulus));
    putU32(header + 4, static_cast<uint32_t>(plan.unaryBits));
    ex.toDevice(body, header, 8);
    uint64_t const n = plan.gapCount;
    uint64_t const m = plan.modulus;
    uint64_t const* gaps = plan.gaps;
    GolombShape const shape = golombShape(m);
    // Unary: gap j ends with a one at bit ends[j] = (sum over i <= j of q_i + 1) - 1.
    uint64_t* lengths = arena.template take<uint64_t>(n);
    uint64_t* ends = arena.template take<uint64_t>(n);
    if (arena.failed())
    {
        return;
    }
    ex.forEach(n, [=] SLICER_HD(uint64_t j) { lengths[j] = gaps[j] / m + 1; });
    ex.exclusiveScanU64(lengths, ends, n);
    ex.forEach(n, [=] SLICER_HD(uint64_t j) { ends[j] += lengths[j] - 1; });
    uint8_t* unary = body + 8;
    uint64_t const unaryBytes = packedBytes(plan.unaryBits, 1);
    ex.forEach(unaryBytes, [=] SLICER_HD(uint64_t B) {
        // The first one at or after bit 8B, by binary search over the increasing ends.
        uint64_t lo = 0;
        uint64_t hi = n;
        while (lo < hi)
        {
            uint64_t const mid = (lo + hi) / 2;
            if (ends[mid] < 8 * B)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        uint32_t byte = 0;
        for (uint64_t j = lo; j < n && ends[j] < 8 * B + 8; ++j)
        {
            byte |= 0x80U >> (ends[j] - 8 * B);
        }
        unary[B] = static_cast<uint8_t>(byte);
    });
    if (m == 1)
    {
        return;
    }
    uint8_t* fields = unary + unaryBytes;
    int const width = shape.width;
    uint64_t const u = shape.u;
    uint64_t const fieldBytes = packedBytes(n, width);
    if (width > 0)
    {
        ex.forEach(fieldBytes, [=] SLICER_HD(uint64_t B) {
            fields[B] = gatherByte(B, width, n, [=](uint64_t e) {
                uint64_t const r = gaps[e] % m;
                return r >= u ? (r + u) >> 1 : r;
            });
        });
    }
    // Extra bits of the long codes, in order: a scan places them.
    uint8_t* extras = fields + fieldBytes;
    uint32_t* isLong = arena.template take<uint32_t>(n);
    uint32_t* place = arena.template take<uint32_t>(n);
    uint8_t* bits = arena.template take<uint8_t>(plan.extraCount);
    if (arena.failed())
    {
        return;
    }
    ex.forEach(n, [=] SLICER_HD(uint64_t j) { isLong[j] = gaps[j] % m >= u ? 1U : 0U; });
    ex.exclusiveScanU32(isLong, place, n);
    ex.forEach(n, [=] SLICER_HD(uint64_t j) {
        if (isLong[j])
        {
            bits[place[j]] = static_cast<uint8_t>((gaps[j] % m + u) & 1U);
        }
    });
    uint64_t const extraCount = plan.extraCount;
    ex.forEach(packedBytes(extraCount, 1), [=] SLICER_HD(uint64_t B) {
        extras[B] = gatherByte(B, 1, extraCount, [=](uint64_t e) { return uint64_t{bits[e]}; });
    });
}

//! One sign's magnitude blocks.
struct SignBlocks
{
    uint64_t count{0};
    uint64_t blocks{0};       // min(M, count)
    float const* sorted{nullptr}; // magnitudes, descending
    uint8_t* labels{nullptr};   // per sign-local index
};

/*
 * The encoder after ATKF: `kept` (ascending flat indices) and `values` in executor
 * memory, the payload written to `out` (executor memory, `capacity` bytes).
 * `*written` receives the size even when the capacity is too small.
 */
template <typename Exec>
slicer_status encodeFromKept(Exec& ex, int64_t const* kept, float const* values, uint64_t k, uint32_t const* shape,
    int ndim, int dtypeCode, slicer_knobs const& knobs, uint8_t* out, size_t capacity, size_t* written)
{
    Arena& arena = ex.arena();
    uint64_t T = 1;
    for (int d = 0; d < ndim; ++d)
    {
        T *= shape[d];
    }
    // --- 1 sign split ---------------------------------------------------------------
    uint32_t* negFlag = arena.template take<uint32_t>(k);
    uint32_t* negRank = arena.template take<uint32_t>(k);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    ex.forEach(k, [=] SLICER_HD(uint64_t i) { negFlag[i] = values[i] < 0.0f ? 1U : 0U; });
    ex.exclusiveScanU32(negFlag, negRank, k);
    uint64_t negCount = 0;
    if (k > 0)
    {
        // The last rank plus the last flag; both sit at the end of their arrays.
        uint32_t lastRank = 0;
        uint32_t lastFlag = 0;
        ex.toHost(&lastRank, negRank + k - 1, 4);
        ex.toHost(&lastFlag, negFlag + k - 1, 4);
        negCount = uint64_t{lastRank} + lastFlag;
    }
    uint64_t const posCount = k - negCount;
    int64_t* negSel = arena.template take<int64_t>(negCount);
    float* posMag = arena.template take<float>(posCount);
    float* negMag = arena.template take<float>(negCount);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    ex.forEach(k, [=] SLICER_HD(uint64_t i) {
        float const v = values[i];
        if (v < 0.0f)
        {
            negSel[negRank[i]] = static_cast<int64_t>(i);
            negMag[negRank[i]] = -v;
        }
        else
        {
            posMag[i - negRank[i]] = v;
        }
    });

    // --- 2 magnitude blocks ------------------------------------------------------------
    SignBlocks sign[2];
    uint64_t const counts[2] = {posCount, negCount};
    float const* mags[2] = {posMag, negMag};
    int const maxBlocks[2] = {knobs.blocksPos, knobs.blocksNeg};
    for (int s = 0; s < 2; ++s)
    {
        uint64_t const n = counts[s];
        sign[s].count = n;
        sign[s].blocks = std::min<uint64_t>(static_cast<uint64_t>(maxBlocks[s]), n);
        uint32_t* iota = arena.template take<uint32_t>(n);
        float* sortedKey = arena.template take<float>(n);
        uint32_t* sortedIdx = arena.template take<uint32_t>(n);
        uint8_t* labels = arena.template take<uint8_t>(n);
        if (arena.failed())
        {
            return SLICER_ERR_CAPACITY;
        }
        sign[s].sorted = sortedKey;
        sign[s].labels = labels;
        if (n == 0)
        {
            continue;
        }
        ex.forEach(n, [=] SLICER_HD(uint64_t j) { iota[j] = static_cast<uint32_t>(j); });
        ex.sortDescending(mags[s], sortedKey, iota, sortedIdx, n);
        uint64_t const nb = sign[s].blocks;
        ex.forEach(n, [=] SLICER_HD(uint64_t r) { labels[sortedIdx[r]] = static_cast<uint8_t>(blockOfRank(r, n, nb)); });
    }
    uint64_t const nbPos = sign[0].blocks;
    uint64_t const nb = nbPos + sign[1].blocks;
    // Block b of a sign spans sorted ranks [b·base, next); lo and hi are its ends.
    std::vector<uint64_t> blockBegin(nb), blockEnd(nb), blockSize(nb);
    for (uint64_t B = 0; B < nb; ++B)
    {
        int const s = B < nbPos ? 0 : 1;
        uint64_t const b = B < nbPos ? B : B - nbPos;
        uint64_t const base = sign[s].count / sign[s].blocks;
        blockBegin[B] = b * base;
        blockEnd[B] = b + 1 == sign[s].blocks ? sign[s].count : (b + 1) * base;
        blockSize[B] = blockEnd[B] - blockBegin[B];
    }
    std::vector<float> lo(nb), hi(nb);
    if (nb > 0)
    {
        uint64_t* dEnds = arena.template take<uint64_t>(2 * nb);
        float* dLoHi = arena.template take<float>(2 * nb);
        if (arena.failed())
        {
            return SLICER_ERR_CAPACITY;
        }
        std::vector<uint64_t> ends(2 * nb);
        std::copy(blockBegin.begin(), blockBegin.end(), ends.begin());
        std::copy(blockEnd.begin(), blockEnd.end(), ends.begin() + nb);
        ex.toDevice(dEnds, ends.data(), 2 * nb * 8);
        float const* posSorted = sign[0].sorted;
        float const* negSorted = sign[1].sorted;
        ex.forEach(nb, [=] SLICER_HD(uint64_t B) {
            float const* sorted = B < nbPos ? posSorted : negSorted;
            dLoHi[B] = sorted[dEnds[nb + B] - 1]; // the smallest magnitude of the block
            dLoHi[nb + B] = sorted[dEnds[B]];     // the largest
        });
        std::vector<float> loHi(2 * nb);
        ex.toHost(loHi.data(), dLoHi, 2 * nb * 4);
        std::copy(loHi.begin(), loHi.begin() + nb, lo.begin());
        std::copy(loHi.begin() + nb, loHi.end(), hi.begin());
    }

    // --- 3 DS-guided bit choice ----------------------------------------------------------
    int const qBits = knobs.qBits;
    int const qMin = knobs.qMin;
    std::vector<int> q(nb, 0);
    std::vector<float> step(nb, 0.0f);
    int const trials = qBits - qMin; // t = qBits-1 down to qMin
    if (nb > 0 && trials > 0)
    {
        // Segment (B, t): the mismatch sum of block B at t bits against its qBits codes.
        uint32_t const segments = static_cast<uint32_t>(nb * trials);
        std::vector<uint64_t> segBegin(segments), segEnd(segments), mismatch(segments, 0);
        for (uint64_t B = 0; B < nb; ++B)
        {
            for (int t = 0; t < trials; ++t)
            {
                segBegin[B * trials + t] = blockBegin[B];
                segEnd[B * trials + t] = lo[B] < hi[B] ? blockEnd[B] : blockBegin[B]; // constant blocks: none
            }
        }
        float* dLo = arena.template take<float>(nb);
        float* dHi = arena.template take<float>(nb);
        if (arena.failed())
        {
            return SLICER_ERR_CAPACITY;
        }
        ex.toDevice(dLo, lo.data(), nb * 4);
        ex.toDevice(dHi, hi.data(), nb * 4);
        float const* posSorted = sign[0].sorted;
        float const* negSorted = sign[1].sorted;
        ex.segmentedSum(segments, segBegin.data(), segEnd.data(), mismatch.data(),
            [=] SLICER_HD(uint32_t segment, uint64_t r) -> uint64_t {
                uint64_t const B = segment / trials;
                int const t = qBits - 1 - static_cast<int>(segment % trials);
                float const mag = B < nbPos ? posSorted[r] : negSorted[r];
                uint32_t const reference = quantizeCode(mag, dLo[B], stepOf(dLo[B], dHi[B], qBits), qBits);
                uint32_t const code = quantizeCode(mag, dLo[B], stepOf(dLo[B], dHi[B], t), t);
                int64_t const diff = static_cast<int64_t>(reference >> (qBits - t)) - static_cast<int64_t>(code);
                return static_cast<uint64_t>(diff < 0 ? -diff : diff);
            });
        for (uint64_t B = 0; B < nb; ++B)
        {
            if (!(lo[B] < hi[B]))
            {
                continue;
            }
            q[B] = qBits;
            for (int t = 0; t < trials; ++t)
            {
                double const ds = static_cast<double>(mismatch[B * trials + t]) / static_cast<double>(blockSize[B]);
                if (!(ds <= static_cast<double>(knobs.delta)))
                {
                    break;
                }
                q[B] = qBits - 1 - t;
            }
        }
    }
    else
    {
        for (uint64_t B = 0; B < nb; ++B)
        {
            q[B] = lo[B] < hi[B] ? qBits : 0;
        }
    }
    for (uint64_t B = 0; B < nb; ++B)
    {
        step[B] = stepOf(lo[B], hi[B], q[B]);
    }

    // --- 4 plan: every section's size before anything is written ---------------------
    std::vector<uint64_t> valueOffset(nb + 1, 0);
    for (uint64_t B = 0; B < nb; ++B)
    {
        valueOffset[B + 1] = valueOffset[B] + packedBytes(blockSize[B], q[B]);
    }
    SubsetPlan const keptPlan = planSubset(ex, kept, k, T);
    SubsetPlan const negPlan = planSubset(ex, negSel, negCount, k);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    uint64_t labelBytes[2] = {0, 0};
    int labelPer[2] = {0, 0};
    int labelBits[2] = {0, 0};
    for (int s = 0; s < 2; ++s)
    {
        int const base = static_cast<int>(sign[s].blocks);
        if (base > 1 && sign[s].count > 0)
        {
            slicer_label_chunk(base, &labelPer[s], &labelBits[s]);
            labelBytes[s] = packedBytes((sign[s].count + labelPer[s] - 1) / labelPer[s], labelBits[s]);
        }
    }
    uint64_t const sectionBytes[7] = {8, keptPlan.bytes, negPlan.bytes, labelBytes[0], labelBytes[1], 9 * nb,
        valueOffset[nb]};
    uint64_t const headerBytes = 12 + 4 * static_cast<uint64_t>(ndim) + 16;
    uint64_t total = headerBytes;
    uint64_t sectionAt[7]; // where each section's bytes start, after its uint32 length
    for (int i = 0; i < 7; ++i)
    {
        sectionAt[i] = total + 4;
        total += 4 + sectionBytes[i];
    }
    total += 4; // CRC-32
    *written = total;
    if (total > capacity || !out)
    {
        return SLICER_ERR_CAPACITY;
    }

    // --- 5 frame: header, length prefixes, meta and block table from the host ---------
    std::vector<uint8_t> head(headerBytes);
    std::memcpy(head.data(), "SLCR", 4);
    head[4] = 1; // format version
    head[5] = 1; // codec: SLICER
    head[6] = static_cast<uint8_t>(dtypeCode);
    head[7] = static_cast<uint8_t>(ndim);
    head[8] = head[9] = 0;
    head[10] = 16;
    head[11] = 0;
    for (int d = 0; d < ndim; ++d)
    {
        putU32(head.data() + 12 + 4 * d, shape[d]);
    }
    uint8_t* kb = head.data() + 12 + 4 * ndim;
    putF32(kb, knobs.sparsity);
    putF32(kb + 4, knobs.lam);
    putF32(kb + 8, knobs.delta);
    kb[12] = static_cast<uint8_t>(knobs.blocksPos);
    kb[13] = static_cast<uint8_t>(knobs.blocksNeg);
    kb[14] = static_cast<uint8_t>(knobs.qBits);
    kb[15] = static_cast<uint8_t>(knobs.qMin);
    ex.toDevice(out, head.data(), headerBytes);
    for (int i = 0; i < 7; ++i)
    {
        uint8_t prefix[4];
        putU32(prefix, static_cast<uint32_t>(sectionBytes[i]));
        ex.toDevice(out + sectionAt[i] - 4, prefix, 4);
    }
    uint8_t meta[8];
    putU32(meta, static_cast<uint32_t>(k));
    putU32(meta + 4, static_cast<uint32_t>(negCount));
    ex.toDevice(out + sectionAt[0], meta, 8);
    std::vector<uint8_t> table(9 * nb + 1);
    for (uint64_t B = 0; B < nb; ++B)
    {
        table[9 * B] = static_cast<uint8_t>(q[B]);
        putF32(&table[9 * B + 1], lo[B]);
        putF32(&table[9 * B + 5], hi[B]);
    }
    if (nb > 0)
    {
        ex.toDevice(out + sectionAt[5], table.data(), 9 * nb);
    }

    // --- 6 positions ------------------------------------------------------------------
    writeSubset(ex, keptPlan, kept, out + sectionAt[1]);
    writeSubset(ex, negPlan, negSel, out + sectionAt[2]);

    // --- 7 labels ------------------------------------------------------------------------
    for (int s = 0; s < 2; ++s)
    {
        if (labelBytes[s] == 0)
        {
            continue;
        }
        uint64_t const n = sign[s].count;
        int const per = labelPer[s];
        int const bits = labelBits[s];
        uint64_t const base = sign[s].blocks;
        uint64_t const words = (n + per - 1) / per;
        uint64_t* word = arena.template take<uint64_t>(words);
        if (arena.failed())
        {
            return SLICER_ERR_CAPACITY;
        }
        uint8_t const* labels = sign[s].labels;
        ex.forEach(words, [=] SLICER_HD(uint64_t w) {
            uint64_t acc = 0;
            for (int j = 0; j < per; ++j)
            {
                uint64_t const i = w * per + j;
                acc = acc * base + (i < n ? labels[i] : 0);
            }
            word[w] = acc;
        });
        uint8_t* section = out + sectionAt[3 + s];
        ex.forEach(labelBytes[s], [=] SLICER_HD(uint64_t B) {
            section[B] = gatherByte(B, bits, words, [=](uint64_t e) { return word[e]; });
        });
    }

    // --- 8 values: block b's codes in index order, q_b bits each ------------------------
    if (k > 0 && valueOffset[nb] > 0)
    {
        uint8_t* blockOf = arena.template take<uint8_t>(k);
        uint8_t* blockSorted = arena.template take<uint8_t>(k);
        uint32_t* iota = arena.template take<uint32_t>(k);
        uint32_t* byBlock = arena.template take<uint32_t>(k);
        uint64_t* dBlockStart = arena.template take<uint64_t>(nb);
        uint64_t* dValueOffset = arena.template take<uint64_t>(nb + 1);
        int* dQ = arena.template take<int>(nb);
        float* dLo = arena.template take<float>(nb);
        float* dStep = arena.template take<float>(nb);
        if (arena.failed())
        {
            return SLICER_ERR_CAPACITY;
        }
        uint8_t const* posLabels = sign[0].labels;
        uint8_t const* negLabels = sign[1].labels;
        uint8_t const nbPosByte = static_cast<uint8_t>(nbPos);
        ex.forEach(k, [=] SLICER_HD(uint64_t i) {
            blockOf[i] = negFlag[i] ? static_cast<uint8_t>(negLabels[negRank[i]] + nbPosByte)
                                    : posLabels[i - negRank[i]];
            iota[i] = static_cast<uint32_t>(i);
        });
        ex.sortByByte(blockOf, blockSorted, iota, byBlock, k, bitLength(nb));
        std::vector<uint64_t> blockStart(nb, 0);
        for (uint64_t B = 1; B < nb; ++B)
        {
            blockStart[B] = blockStart[B - 1] + blockSize[B - 1];
        }
        ex.toDevice(dBlockStart, blockStart.data(), nb * 8);
        ex.toDevice(dValueOffset, valueOffset.data(), (nb + 1) * 8);
        ex.toDevice(dQ, q.data(), nb * sizeof(int));
        ex.toDevice(dLo, lo.data(), nb * 4);
        ex.toDevice(dStep, step.data(), nb * 4);
        uint8_t* section = out + sectionAt[6];
        uint64_t const blocks = nb;
        ex.forEach(valueOffset[nb], [=] SLICER_HD(uint64_t byte) {
            uint64_t B = 0; // the block holding this byte (<= 128 blocks: a linear scan)
            while (B + 1 < blocks && dValueOffset[B + 1] <= byte)
            {
                ++B;
            }
            int const bits = dQ[B];
            uint64_t const size = (B + 1 < blocks ? dBlockStart[B + 1] : k) - dBlockStart[B];
            section[byte] = gatherByte(byte - dValueOffset[B], bits, size, [=](uint64_t e) {
                uint32_t const i = byBlock[dBlockStart[B] + e];
                float const v = values[i];
                return uint64_t{quantizeCode(v < 0.0f ? -v : v, dLo[B], dStep[B], bits)};
            });
        });
    }

    // --- 9 CRC-32 of everything before it ----------------------------------------------------
    uint8_t crc[4];
    putU32(crc, chunkedCrc32(ex, out, total - 4));
    ex.toDevice(out + total - 4, crc, 4);
    if (arena.failed())
    {
        return SLICER_ERR_CAPACITY;
    }
    return ex.ok() ? SLICER_OK : SLICER_ERR_CUDA;
}

//! Workspace bytes encodeFromKept needs for tensors of up to T elements (without the
//! executor's own: CUB temporary storage on the GPU). A bound; the CPU tests run
//! the encoder inside exactly this much.
inline size_t workspaceBound(uint64_t T)
{
    return static_cast<size_t>(96 * T) + (size_t{1} << 20);
}

} // namespace par
} // namespace slicer

#endif // SLICER_PARALLEL_ENCODE_H
