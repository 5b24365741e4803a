// CRC-32 (the zlib polynomial): the payload trailer, as zlib.crc32 computes it.

#include "slicer_codec.h"

#include <array>

namespace slicer
{
namespace
{

std::array<uint32_t, 256> makeTable()
{
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i)
    {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k)
        {
            c = (c & 1U) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
        }
        table[i] = c;
    }
    return table;
}

} // namespace
} // namespace slicer

extern "C" uint32_t slicer_crc32(uint8_t const* data, size_t len, uint32_t crc)
{
    static std::array<uint32_t, 256> const kTABLE = slicer::makeTable();
    uint32_t c = crc ^ 0xFFFFFFFFU;
    for (size_t i = 0; i < len; ++i)
    {
        c = kTABLE[(c ^ data[i]) & 0xFFU] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFU;
}
