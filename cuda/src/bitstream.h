// Bit streams of the wire format: fields packed most significant bit first, as
// numpy.packbits lays bits out (slicer_compile/codec/bits.py).
#ifndef SLICER_BITSTREAM_H
#define SLICER_BITSTREAM_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace slicer
{

inline size_t packedNbytes(uint64_t count, int width)
{
    return static_cast<size_t>((count * static_cast<uint64_t>(width) + 7) / 8);
}

//! Appends fields to a byte buffer, MSB first; the buffer starts zeroed.
class BitWriter
{
public:
    BitWriter(uint8_t* out, size_t capacity)
        : mOut(out)
        , mCapacity(capacity)
    {
    }

    //! The low ``width`` bits of ``value`` (0..64), a byte's worth at a time.
    bool put(uint64_t value, int width)
    {
        while (width > 0)
        {
            size_t const byte = mBits >> 3;
            if (byte >= mCapacity)
            {
                return false;
            }
            int const free = 8 - static_cast<int>(mBits & 7);
            int const n = width < free ? width : free;
            uint64_t const chunk = (value >> (width - n)) & ((uint64_t{1} << n) - 1);
            mOut[byte] |= static_cast<uint8_t>(chunk << (free - n));
            mBits += static_cast<uint64_t>(n);
            width -= n;
        }
        return true;
    }

    size_t bytes() const
    {
        return static_cast<size_t>((mBits + 7) / 8);
    }

private:
    uint8_t* mOut;
    size_t mCapacity;
    uint64_t mBits{0};
};

//! The 64 bits of ``buf`` from bit ``pos`` on, MSB first (bits past ``len`` bytes read
//! as zero): one load where a byte-at-a-time reader would loop.
inline uint64_t window64(uint8_t const* buf, size_t len, uint64_t pos)
{
    size_t const byte = static_cast<size_t>(pos >> 3);
    int const shift = static_cast<int>(pos & 7);
    uint64_t word;
    uint8_t next;
    if (byte + 9 <= len) // the common case: two plain loads
    {
        std::memcpy(&word, buf + byte, 8);
        next = buf[byte + 8];
    }
    else // the stream's last bytes: what lies past them reads as zero
    {
        uint8_t bytes[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        if (byte < len)
        {
            std::memcpy(bytes, buf + byte, len - byte);
        }
        std::memcpy(&word, bytes, 8);
        next = bytes[8];
    }
    word = __builtin_bswap64(word); // the wire is MSB first: the first byte is the top
    return shift ? (word << shift) | (static_cast<uint64_t>(next) >> (8 - shift)) : word;
}

//! Reads fields back; every read is bounds-checked by the caller's length.
class BitReader
{
public:
    BitReader(uint8_t const* buf, size_t len)
        : mBuf(buf)
        , mLen(len)
    {
    }

    //! ``width`` bits (0..64), a byte's worth at a time.
    bool get(int width, uint64_t* value)
    {
        uint64_t v = 0;
        while (width > 0)
        {
            size_t const byte = mBits >> 3;
            if (byte >= mLen)
            {
                return false;
            }
            int const avail = 8 - static_cast<int>(mBits & 7);
            int const n = width < avail ? width : avail;
            uint64_t const chunk = (static_cast<uint64_t>(mBuf[byte]) >> (avail - n)) & ((uint64_t{1} << n) - 1);
            v = (v << n) | chunk;
            mBits += static_cast<uint64_t>(n);
            width -= n;
        }
        *value = v;
        return true;
    }

    uint64_t position() const
    {
        return mBits;
    }

private:
    uint8_t const* mBuf;
    size_t mLen;
    uint64_t mBits{0};
};

} // namespace slicer

#endif // SLICER_BITSTREAM_H
