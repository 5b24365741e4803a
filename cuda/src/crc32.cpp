// CRC-32 (the zlib polynomial): the payload trailer, as zlib.crc32 computes it.

#include "slicer_codec.h"

#include <array>

namespace slicer
{
namespace
{

//! Slicing-by-8 tables: kTABLES[0] is the byte-wise table; kTABLES[j][b] is the CRC of
//! byte b followed by j zero bytes, so eight bytes are folded in per step.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

Tables makeTables()
{
    Tables tables{};
    for (uint32_t i = 0; i < 256; ++i)
    {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k)
        {
            c = (c & 1U) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
        }
        tables[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
    {
        for (int j = 1; j < 8; ++j)
        {
            uint32_t const previous = tables[j - 1][i];
            tables[j][i] = tables[0][previous & 0xFFU] ^ (previous >> 8);
        }
    }
    return tables;
}

} // namespace
} // namespace slicer

extern "C" uint32_t slicer_crc32(uint8_t const* data, size_t len, uint32_t crc)
{
    static slicer::Tables const kTABLES = slicer::makeTables();
    auto const& t = kTABLES;
    uint32_t c = crc ^ 0xFFFFFFFFU;
    size_t i = 0;
    for (; i + 8 <= len; i += 8)  // the bytes read one by one: no alignment or endianness assumed
    {
        uint32_t const lo = c ^ (static_cast<uint32_t>(data[i]) | (static_cast<uint32_t>(data[i + 1]) << 8)
            | (static_cast<uint32_t>(data[i + 2]) << 16) | (static_cast<uint32_t>(data[i + 3]) << 24));
        c = t[7][lo & 0xFFU] ^ t[6][(lo >> 8) & 0xFFU] ^ t[5][(lo >> 16) & 0xFFU] ^ t[4][lo >> 24]
            ^ t[3][data[i + 4]] ^ t[2][data[i + 5]] ^ t[1][data[i + 6]] ^ t[0][data[i + 7]];
    }
    for (; i < len; ++i)
    {
        c = t[0][(c ^ data[i]) & 0xFFU] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFU;
}
