// Position coding, byte for byte as slicer_compile/codec/positions.py: a sorted
// index set as a bitmap, fixed-width indices or a Golomb code of its gaps (or of
// its complement's), whichever is smallest; block labels as mixed-radix words.

#include "bitstream.h"
#include "codec_math.h"
#include "slicer_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

namespace slicer
{
namespace
{

constexpr double kGOLOMB_MAX_DENSITY = 0.4; // past it a bitmap is never larger
constexpr size_t kGOLOMB_HEADER_BYTES = 8;   // m, unary bit count (uint32 each)

size_t golombNbytes(std::vector<uint64_t> const& gaps, uint64_t gapSum, uint64_t m)
{
    uint64_t const n = gaps.size();
    GolombShape const shape = golombShape(m);
    uint64_t unaryBits = n;
    uint64_t extra = 0;
    if (m == 1)
    {
        unaryBits += gapSum;
    }
    else
    {
        if (m <= 0xFFFFFFFFULL && gapSum <= 0xFFFFFFFFULL)
        {
            // Every gap fits 32 bits (their sum does): a 32-bit division is a fraction of
            // a 64-bit one, and this loop runs for three moduli per subset.
            uint32_t const m32 = static_cast<uint32_t>(m);
            for (uint64_t g : gaps)
            {
                uint32_t const q = static_cast<uint32_t>(g) / m32;
                unaryBits += q;
                extra += (static_cast<uint32_t>(g) - q * m32) >= shape.u ? 1 : 0;
            }
        }
        else
        {
            for (uint64_t g : gaps)
            {
                uint64_t const q = g / m;
                unaryBits += q;
                extra += (g - q * m) >= shape.u ? 1 : 0;
            }
        }
    }
    return 1 + kGOLOMB_HEADER_BYTES + packedNbytes(unaryBits, 1) + packedNbytes(n, shape.width)
        + packedNbytes(extra, 1);
}

//! The modulus near the geometric optimum with the fewest bytes (ties: the smaller m).
uint64_t bestModulus(std::vector<uint64_t> const& gaps, uint64_t gapSum, size_t* nbytes)
{
    double const mean = static_cast<double>(gapSum) / static_cast<double>(gaps.size());
    double const q = mean / (mean + 1.0);
    uint64_t guess = 1;
    if (q > 0.0)
    {
        guess = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(std::log(1.0 + q) / -std::log(q))));
    }
    uint64_t const lowest = std::max<uint64_t>(1, guess - 1);
    uint64_t best = 0;
    size_t bestBytes = 0;
    for (uint64_t m = lowest; m <= guess + 1; ++m)
    {
        size_t const size = golombNbytes(gaps, gapSum, m);
        if (best == 0 || size < bestBytes)
        {
            best = m;
            bestBytes = size;
        }
    }
    *nbytes = bestBytes;
    return best;
}

void putU32(uint8_t* out, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
    {
        out[i] = static_cast<uint8_t>(v >> (8 * i));
    }
}

//! Whether the bits after the first `bits` of a byte-padded stream are all zero.
bool zeroPadding(uint8_t const* stream, uint64_t bits)
{
    if (bits % 8 == 0)
    {
        return true;
    }
    uint8_t const mask = static_cast<uint8_t>(0xFFU >> (bits % 8));
    return (stream[bits / 8] & mask) == 0;
}

uint32_t getU32(uint8_t const* in)
{
    return static_cast<uint32_t>(in[0]) | (static_cast<uint32_t>(in[1]) << 8) | (static_cast<uint32_t>(in[2]) << 16)
        | (static_cast<uint32_t>(in[3]) << 24);
}

//! Golomb streams (after the method byte): header, unary, fields, extra bits.
void golombEncode(std::vector<uint64_t> const& gaps, uint64_t m, uint8_t* out)
{
    GolombShape const shape = golombShape(m);
    uint64_t unaryBits = 0;
    for (uint64_t g : gaps)
    {
        unaryBits += g / m + 1;
    }
    putU32(out, static_cast<uint32_t>(m));
    putU32(out + 4, static_cast<uint32_t>(unaryBits));
    uint8_t* p = out + kGOLOMB_HEADER_BYTES;
    size_t const unaryBytes = packedNbytes(unaryBits, 1);
    std::memset(p, 0, unaryBytes);
    uint64_t bit = 0;
    for (uint64_t g : gaps)
    {
        bit += g / m; // quotient zeros, then a one
        p[bit >> 3] |= static_cast<uint8_t>(0x80U >> (bit & 7));
        ++bit;
    }
    p += unaryBytes;
    if (m == 1)
    {
        return;
    }
    size_t const fieldBytes = packedNbytes(gaps.size(), shape.width);
    std::memset(p, 0, fieldBytes);
    BitWriter fields(p, fieldBytes);
    std::vector<uint8_t> extras;
    for (uint64_t g : gaps)
    {
        uint64_t const r = g % m;
        bool const longCode = r >= shape.u;
        fields.put(longCode ? (r + shape.u) >> 1 : r, shape.width);
        if (longCode)
        {
            extras.push_back(static_cast<uint8_t>((r + shape.u) & 1U));
        }
    }
    p += fieldBytes;
    size_t const extraBytes = packedNbytes(extras.size(), 1);
    std::memset(p, 0, extraBytes);
    for (size_t i = 0; i < extras.size(); ++i)
    {
        if (extras[i])
        {
            p[i >> 3] |= static_cast<uint8_t>(0x80U >> (i & 7));
        }
    }
}

} // namespace
} // namespace slicer

using slicer::packedNbytes;

extern "C" size_t slicer_subset_max_nbytes(uint64_t maxCount, uint64_t space)
{
    uint64_t const count = std::min<uint64_t>(maxCount, space == 0 ? 0 : space - 1);
    if (count == 0)
    {
        return 1;
    }
    return 1 + std::min(packedNbytes(space, 1), packedNbytes(count, slicer::indexWidth(space)));
}

extern "C" slicer_status slicer_encode_subset(
    int64_t const* indices, uint64_t count, uint64_t space, uint8_t* out, size_t capacity, size_t* written)
{
    if (!written || !out || (count > 0 && !indices) || count > space)
    {
        return SLICER_ERR_ARGUMENT;
    }
    for (uint64_t i = 0; i < count; ++i)
    {
        if (indices[i] < 0 || static_cast<uint64_t>(indices[i]) >= space || (i && indices[i] <= indices[i - 1]))
        {
            return SLICER_ERR_ARGUMENT;
        }
    }
    if (count == 0 || count == space)
    {
        if (capacity < 1)
        {
            return SLICER_ERR_CAPACITY;
        }
        out[0] = SLICER_SUBSET_TRIVIAL;
        *written = 1;
        return SLICER_OK;
    }
    int const width = slicer::indexWidth(space);
    // (bytes, method): the smallest wins, ties to the lower method id, as Python's min().
    size_t bestBytes = 1 + packedNbytes(space, 1);
    int method = SLICER_SUBSET_BITMAP;
    if (1 + packedNbytes(count, width) < bestBytes)
    {
        bestBytes = 1 + packedNbytes(count, width);
        method = SLICER_SUBSET_FIXED;
    }
    bool const complement = 2 * count > space;
    std::vector<uint64_t> gaps;
    uint64_t modulus = 0;
    if (static_cast<double>(std::min(count, space - count)) <= slicer::kGOLOMB_MAX_DENSITY * static_cast<double>(space))
    {
        int64_t previous = -1;
        auto addGap = [&](int64_t position) {
            gaps.push_back(static_cast<uint64_t>(position - previous - 1));
            previous = position;
        };
        if (complement)
        {
            uint64_t next = 0;
            for (uint64_t pos = 0; pos < space; ++pos)
            {
                if (next < count && static_cast<uint64_t>(indices[next]) == pos)
                {
                    ++next;
                }
                else
                {
                    addGap(static_cast<int64_t>(pos));
                }
            }
        }
        else
        {
            for (uint64_t i = 0; i < count; ++i)
            {
                addGap(indices[i]);
            }
        }
        uint64_t const gapSum = static_cast<uint64_t>(previous + 1) - gaps.size();
        size_t golombBytes = 0;
        modulus = slicer::bestModulus(gaps, gapSum, &golombBytes);
        int const golombMethod = complement ? SLICER_SUBSET_GOLOMB_COMPLEMENT : SLICER_SUBSET_GOLOMB;
        if (golombBytes < bestBytes)
        {
            bestBytes = golombBytes;
            method = golombMethod;
        }
    }
    if (bestBytes > capacity)
    {
        return SLICER_ERR_CAPACITY;
    }
    out[0] = static_cast<uint8_t>(method);
    if (method == SLICER_SUBSET_BITMAP)
    {
        std::memset(out + 1, 0, bestBytes - 1);
        for (uint64_t i = 0; i < count; ++i)
        {
            out[1 + (indices[i] >> 3)] |= static_cast<uint8_t>(0x80U >> (indices[i] & 7));
        }
    }
    else if (method == SLICER_SUBSET_FIXED)
    {
        std::memset(out + 1, 0, bestBytes - 1);
        slicer::BitWriter writer(out + 1, bestBytes - 1);
        for (uint64_t i = 0; i < count; ++i)
        {
            writer.put(static_cast<uint64_t>(indices[i]), width);
        }
    }
    else
    {
        slicer::golombEncode(gaps, modulus, out + 1);
    }
    *written = bestBytes;
    return SLICER_OK;
}

extern "C" slicer_status slicer_check_subset_length(uint8_t const* buf, size_t len, uint64_t count, uint64_t space)
{
    if (!buf || len < 1 || count > space)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint8_t const method = buf[0];
    size_t const bodyLen = len - 1;
    if (method == SLICER_SUBSET_TRIVIAL)
    {
        return (count == 0 || count == space) && bodyLen == 0 ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    if (count == 0 || count == space)
    {
        return SLICER_ERR_PAYLOAD;
    }
    if (method == SLICER_SUBSET_BITMAP)
    {
        return bodyLen == packedNbytes(space, 1) ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    if (method == SLICER_SUBSET_FIXED)
    {
        return bodyLen == packedNbytes(count, slicer::indexWidth(space)) ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    if (method != SLICER_SUBSET_GOLOMB && method != SLICER_SUBSET_GOLOMB_COMPLEMENT)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint64_t const coded = method == SLICER_SUBSET_GOLOMB_COMPLEMENT ? space - count : count;
    if (bodyLen < slicer::kGOLOMB_HEADER_BYTES)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint64_t const m = slicer::getU32(buf + 1);
    uint64_t const unaryBits = slicer::getU32(buf + 5);
    if (m < 1 || m > space || unaryBits < coded || (unaryBits - coded) > space / m)
    {
        return SLICER_ERR_PAYLOAD;
    }
    size_t const streams = packedNbytes(unaryBits, 1) + (m == 1 ? 0 : packedNbytes(coded, slicer::golombShape(m).width));
    // With m = 1 there are no fields and no extra bits: the unary stream ends the section.
    bool const fits = m == 1 ? bodyLen == slicer::kGOLOMB_HEADER_BYTES + streams
                             : bodyLen >= slicer::kGOLOMB_HEADER_BYTES + streams;
    return fits ? SLICER_OK : SLICER_ERR_PAYLOAD;
}

extern "C" slicer_status slicer_decode_subset(
    uint8_t const* buf, size_t len, uint64_t count, uint64_t space, int64_t* out)
{
    if (buf && len >= 1 && count > 0 && count <= space && !out)
    {
        return SLICER_ERR_ARGUMENT;
    }
    if (slicer_check_subset_length(buf, len, count, space) != SLICER_OK)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint8_t const method = buf[0];
    uint8_t const* body = buf + 1;
    size_t const bodyLen = len - 1;
    if (method == SLICER_SUBSET_TRIVIAL)
    {
        if ((count != 0 && count != space) || bodyLen != 0)
        {
            return SLICER_ERR_PAYLOAD;
        }
        for (uint64_t i = 0; i < count; ++i)
        {
            out[i] = static_cast<int64_t>(i);
        }
        return SLICER_OK;
    }
    if (count == 0 || count == space)
    {
        return SLICER_ERR_PAYLOAD;
    }
    if (method == SLICER_SUBSET_BITMAP)
    {
        if (bodyLen != packedNbytes(space, 1))
        {
            return SLICER_ERR_PAYLOAD;
        }
        uint64_t found = 0;
        for (size_t byte = 0; byte < bodyLen; ++byte)
        {
            // Set bits only, the highest (the earliest position) first: a sparse bitmap is
            // mostly zero bytes.
            for (unsigned bits = body[byte]; bits != 0;)
            {
                int const high = 31 - __builtin_clz(bits);
                bits ^= 1U << high;
                uint64_t const pos = 8 * byte + 7 - static_cast<uint64_t>(high);
                if (pos >= space || found == count)
                {
                    return SLICER_ERR_PAYLOAD; // padding bit set, or more positions than announced
                }
                out[found++] = static_cast<int64_t>(pos);
            }
        }
        return found == count ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    if (method == SLICER_SUBSET_FIXED)
    {
        int const width = slicer::indexWidth(space);
        if (bodyLen != packedNbytes(count, width))
        {
            return SLICER_ERR_PAYLOAD;
        }
        slicer::BitReader reader(body, bodyLen);
        for (uint64_t i = 0; i < count; ++i)
        {
            uint64_t v = 0;
            reader.get(width, &v);
            if (v >= space || (i && static_cast<int64_t>(v) <= out[i - 1]))
            {
                return SLICER_ERR_PAYLOAD;
            }
            out[i] = static_cast<int64_t>(v);
        }
        return SLICER_OK;
    }
    if (method != SLICER_SUBSET_GOLOMB && method != SLICER_SUBSET_GOLOMB_COMPLEMENT)
    {
        return SLICER_ERR_PAYLOAD;
    }
    bool const complement = method == SLICER_SUBSET_GOLOMB_COMPLEMENT;
    uint64_t const coded = complement ? space - count : count;
    if (bodyLen < slicer::kGOLOMB_HEADER_BYTES)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint64_t const m = slicer::getU32(body);
    uint64_t const unaryBits = slicer::getU32(body + 4);
    if (m < 1 || m > space || unaryBits < coded || (unaryBits - coded) > space / m)
    {
        return SLICER_ERR_PAYLOAD;
    }
    slicer::GolombShape const shape = slicer::golombShape(m);
    size_t const unaryBytes = packedNbytes(unaryBits, 1);
    size_t const fieldBytes = m == 1 ? 0 : packedNbytes(coded, shape.width);
    if (bodyLen < slicer::kGOLOMB_HEADER_BYTES + unaryBytes + fieldBytes)
    {
        return SLICER_ERR_PAYLOAD;
    }
    uint8_t const* unary = body + slicer::kGOLOMB_HEADER_BYTES;
    uint8_t const* fields = unary + unaryBytes;
    uint8_t const* extra = unary + unaryBytes + fieldBytes;
    size_t const extraLen = bodyLen - slicer::kGOLOMB_HEADER_BYTES - unaryBytes - fieldBytes;
    // Written straight to ``out``; a complement's positions (the absent ones) go to a
    // buffer first.
    std::vector<int64_t> absent;
    if (complement)
    {
        absent.resize(coded);
    }
    int64_t* const positions = complement ? absent.data() : out;
    uint64_t bit = 0;
    uint64_t fieldBit = 0;
    uint64_t extraUsed = 0;
    int64_t previous = -1;
    for (uint64_t i = 0; i < coded; ++i)
    {
        // The quotient: the zeros before the next one, counted 64 bits at a time.
        uint64_t quotient = 0;
        for (;;)
        {
            if (bit >= unaryBits)
            {
                return SLICER_ERR_PAYLOAD;
            }
            uint64_t const window = slicer::window64(unary, unaryBytes, bit);
            if (window == 0)
            {
                quotient += 64;
                bit += 64;
                continue;
            }
            uint64_t const zeros = static_cast<uint64_t>(__builtin_clzll(window));
            if (bit + zeros >= unaryBits)
            {
                return SLICER_ERR_PAYLOAD; // the one is in the padding
            }
            quotient += zeros;
            bit += zeros + 1;
            break;
        }
        uint64_t remainder = 0;
        if (m > 1)
        {
            // Fields are under 32 bits and the stream's length was checked for all of them.
            uint64_t const field
                = shape.width ? slicer::window64(fields, fieldBytes, fieldBit) >> (64 - shape.width) : 0;
            fieldBit += static_cast<uint64_t>(shape.width);
            remainder = field;
            if (field >= shape.u)
            {
                if (extraUsed >= 8 * extraLen)
                {
                    return SLICER_ERR_PAYLOAD;
                }
                uint64_t const e = (extra[extraUsed >> 3] >> (7 - (extraUsed & 7))) & 1U;
                ++extraUsed;
                remainder = ((field << 1) | e) - shape.u;
            }
            if (remainder >= m)
            {
                return SLICER_ERR_PAYLOAD;
            }
        }
        int64_t const position = previous + 1 + static_cast<int64_t>(quotient * m + remainder);
        if (position >= static_cast<int64_t>(space))
        {
            return SLICER_ERR_PAYLOAD;
        }
        positions[i] = position;
        previous = position;
    }
    if (bit != unaryBits || packedNbytes(extraUsed, 1) != extraLen || !slicer::zeroPadding(unary, unaryBits)
        || !slicer::zeroPadding(extra, extraUsed))
    {
        return SLICER_ERR_PAYLOAD; // as the numpy decoder: canonical streams only
    }
    if (!complement)
    {
        return SLICER_OK;
    }
    uint64_t next = 0;
    uint64_t written = 0;
    for (uint64_t pos = 0; pos < space; ++pos)
    {
        if (next < absent.size() && static_cast<uint64_t>(absent[next]) == pos)
        {
            ++next;
        }
        else
        {
            out[written++] = static_cast<int64_t>(pos);
        }
    }
    return SLICER_OK;
}

namespace slicer
{
namespace
{

struct LabelChunk
{
    int perWord;
    int bits;
};

LabelChunk searchLabelChunk(int base)
{
    // Same search as positions.label_chunk: the chunk whose word wastes the least.
    int bestC = 1;
    int bestBits = std::max(1, slicer::bitLength(static_cast<uint64_t>(base > 0 ? base - 1 : 0)));
    double bestRatio = bestBits;
    unsigned __int128 power = 1;
    unsigned __int128 const limit = static_cast<unsigned __int128>(1) << 64;
    for (int c = 1;; ++c)
    {
        power *= static_cast<unsigned __int128>(base);
        if (base < 2 || power > limit)
        {
            break;
        }
        unsigned __int128 const top = power - 1;
        int const b = top >> 64 ? 64 + slicer::bitLength(static_cast<uint64_t>(top >> 64))
                                : slicer::bitLength(static_cast<uint64_t>(top));
        if (static_cast<double>(b) / c < bestRatio - 1e-12)
        {
            bestC = c;
            bestBits = b;
            bestRatio = static_cast<double>(b) / c;
        }
    }
    return {bestC, bestBits};
}

//! Every base a label section can have (labels are bytes), searched once: the coders
//! ask for every section of every payload.
std::array<LabelChunk, 257> const& labelChunks()
{
    static std::array<LabelChunk, 257> const kCHUNKS = []
    {
        std::array<LabelChunk, 257> chunks{};
        for (int base = 0; base <= 256; ++base)
        {
            chunks[base] = searchLabelChunk(base);
        }
        return chunks;
    }();
    return kCHUNKS;
}

} // namespace
} // namespace slicer

extern "C" void slicer_label_chunk(int base, int* perWord, int* bits)
{
    slicer::LabelChunk const chunk
        = base >= 0 && base <= 256 ? slicer::labelChunks()[base] : slicer::searchLabelChunk(base);
    *perWord = chunk.perWord;
    *bits = chunk.bits;
}

extern "C" slicer_status slicer_encode_labels(
    uint8_t const* labels, uint64_t count, int base, uint8_t* out, size_t capacity, size_t* written)
{
    if (!written || (count > 0 && !labels))
    {
        return SLICER_ERR_ARGUMENT;
    }
    if (base <= 1 || count == 0)
    {
        *written = 0;
        return SLICER_OK;
    }
    int perWord = 0;
    int bits = 0;
    slicer_label_chunk(base, &perWord, &bits);
    uint64_t const words = (count + perWord - 1) / perWord;
    size_t const need = packedNbytes(words, bits);
    if (need > capacity || !out)
    {
        return SLICER_ERR_CAPACITY;
    }
    std::memset(out, 0, need);
    slicer::BitWriter writer(out, need);
    for (uint64_t w = 0; w < words; ++w)
    {
        uint64_t acc = 0;
        for (int j = 0; j < perWord; ++j)
        {
            uint64_t const i = w * perWord + j;
            uint64_t const digit = i < count ? labels[i] : 0;
            if (digit >= static_cast<uint64_t>(base))
            {
                return SLICER_ERR_ARGUMENT;
            }
            acc = acc * static_cast<uint64_t>(base) + digit; // < base^perWord <= 2^64: no wrap
        }
        writer.put(acc, bits);
    }
    *written = need;
    return SLICER_OK;
}

extern "C" slicer_status slicer_check_labels_length(size_t len, uint64_t count, int base)
{
    if (base <= 1 || count == 0)
    {
        return len == 0 ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    int perWord = 0;
    int bits = 0;
    slicer_label_chunk(base, &perWord, &bits);
    return len == packedNbytes((count + perWord - 1) / perWord, bits) ? SLICER_OK : SLICER_ERR_PAYLOAD;
}

extern "C" slicer_status slicer_decode_labels(uint8_t const* buf, size_t len, uint64_t count, int base, uint8_t* out)
{
    if (base <= 1 || count == 0)
    {
        for (uint64_t i = 0; i < count; ++i)
        {
            out[i] = 0;
        }
        return len == 0 ? SLICER_OK : SLICER_ERR_PAYLOAD;
    }
    int perWord = 0;
    int bits = 0;
    slicer_label_chunk(base, &perWord, &bits);
    uint64_t const words = (count + perWord - 1) / perWord;
    if (!buf || len != packedNbytes(words, bits))
    {
        return SLICER_ERR_PAYLOAD;
    }
    unsigned __int128 limit = 1;
    for (int j = 0; j < perWord; ++j)
    {
        limit *= static_cast<unsigned __int128>(base);
    }
    slicer::BitReader reader(buf, len);
    std::vector<uint64_t> digits(perWord);
    bool const power2 = (base & (base - 1)) == 0;
    int const shift = slicer::bitLength(static_cast<uint64_t>(base)) - 1;
    for (uint64_t w = 0; w < words; ++w)
    {
        uint64_t acc = 0;
        reader.get(bits, &acc);
        if (static_cast<unsigned __int128>(acc) >= limit)
        {
            return SLICER_ERR_PAYLOAD; // a word beyond base^perWord
        }
        if (power2)  // the usual block counts (2, 4, 8): digits are bit fields
        {
            for (int j = perWord - 1; j >= 0; --j)
            {
                digits[j] = acc & (static_cast<uint64_t>(base) - 1);
                acc >>= shift;
            }
        }
        else
        {
            for (int j = perWord - 1; j >= 0; --j)
            {
                digits[j] = acc % static_cast<uint64_t>(base);
                acc /= static_cast<uint64_t>(base);
            }
        }
        for (int j = 0; j < perWord; ++j)
        {
            uint64_t const i = w * perWord + j;
            if (i < count)
            {
                out[i] = static_cast<uint8_t>(digits[j]);
            }
            else if (digits[j] != 0)
            {
                return SLICER_ERR_PAYLOAD; // padding labels must be zero
            }
        }
    }
    return SLICER_OK;
}
