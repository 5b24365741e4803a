// Fixed-width bit packing (the C ABI over bitstream.h).

#include "bitstream.h"
#include "slicer_codec.h"

#include <cstring>


extern "C" size_t slicer_packed_nbytes(uint64_t count, int width)
{
    return slicer::packedNbytes(count, width);
}

extern "C" slicer_status slicer_pack_uint(
    uint64_t const* values, uint64_t count, int width, uint8_t* out, size_t capacity, size_t* written)
{
    if (width < 0 || width > 64 || (count > 0 && width > 0 && (values == nullptr || out == nullptr)) || !written)
    {
        return SLICER_ERR_ARGUMENT;
    }
    size_t const need = slicer::packedNbytes(count, width);
    if (need > capacity)
    {
        return SLICER_ERR_CAPACITY;
    }
    if (need > 0)
    {
        std::memset(out, 0, need);
    }
    slicer::BitWriter writer(out, capacity);
    for (uint64_t i = 0; i < count && width > 0; ++i)
    {
        if (width < 64 && (values[i] >> width) != 0)
        {
            return SLICER_ERR_ARGUMENT; // a value does not fit its field
        }
        writer.put(values[i], width);
    }
    *written = need;
    return SLICER_OK;
}

extern "C" slicer_status slicer_unpack_uint(uint8_t const* buf, size_t len, uint64_t count, int width, uint64_t* out)
{
    if (width < 0 || width > 64 || (count > 0 && out == nullptr))
    {
        return SLICER_ERR_ARGUMENT;
    }
    if (slicer::packedNbytes(count, width) > len)
    {
        return SLICER_ERR_PAYLOAD;
    }
    slicer::BitReader reader(buf, len);
    for (uint64_t i = 0; i < count; ++i)
    {
        if (width == 0)
        {
            out[i] = 0;
        }
        else if (!reader.get(width, &out[i]))
        {
            return SLICER_ERR_PAYLOAD;
        }
    }
    return SLICER_OK;
}
