// Bit streams of the wire format: fields packed most significant bit first, as
// numpy.packbits lays bits out (slicer_compile/codec/bits.py).
#ifndef SLICER_BITSTREAM_H
#define SLICER_BITSTREAM_H

#include <cstddef>
#include <cstdint>

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

    bool put(uint64_t value, int width)
    {
        for (int bit = width - 1; bit >= 0; --bit)
        {
            size_t const byte = mBits >> 3;
            if (byte >= mCapacity)
            {
                return false;
            }
            if ((value >> bit) & 1U)
            {
                mOut[byte] |= static_cast<uint8_t>(0x80U >> (mBits & 7));
            }
            ++mBits;
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

//! Reads fields back; every read is bounds-checked by the caller's length.
class BitReader
{
public:
    BitReader(uint8_t const* buf, size_t len)
        : mBuf(buf)
        , mLen(len)
    {
    }

    bool get(int width, uint64_t* value)
    {
        uint64_t v = 0;
        for (int i = 0; i < width; ++i)
        {
            size_t const byte = mBits >> 3;
            if (byte >= mLen)
            {
                return false;
            }
            v = (v << 1) | ((mBuf[byte] >> (7 - (mBits & 7))) & 1U);
            ++mBits;
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
