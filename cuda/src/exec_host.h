// The host executor of parallel_encode.h: each stage as a loop or a std
// algorithm. It runs the same template, the same per-element code and the same
// workspace arithmetic as the GPU executor, so the CPU tests check them.
#ifndef SLICER_EXEC_HOST_H
#define SLICER_EXEC_HOST_H

#include "parallel_encode.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace slicer
{
namespace par
{

class HostExec
{
public:
    HostExec(void* workspace, size_t bytes)
        : mArena(workspace, bytes)
    {
    }

    Arena& arena()
    {
        return mArena;
    }

    template <typename F>
    void forEach(uint64_t n, F const& f)
    {
        for (uint64_t i = 0; i < n; ++i)
        {
            f(i);
        }
    }

    void exclusiveScanU32(uint32_t const* in, uint32_t* out, uint64_t n)
    {
        exclusiveScan(in, out, n);
    }

    void exclusiveScanU64(uint64_t const* in, uint64_t* out, uint64_t n)
    {
        exclusiveScan(in, out, n);
    }

    //! Stable: equal keys keep their order (as CUB's radix sort does).
    void sortDescending(float const* keysIn, float* keysOut, uint32_t const* valsIn, uint32_t* valsOut, uint64_t n)
    {
        std::vector<uint32_t> order(n);
        std::iota(order.begin(), order.end(), 0U);
        std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return keysIn[a] > keysIn[b]; });
        for (uint64_t r = 0; r < n; ++r)
        {
            keysOut[r] = keysIn[order[r]];
            valsOut[r] = valsIn[order[r]];
        }
    }

    //! Stable ascending sort by a byte key (a counting sort).
    void sortByByte(uint8_t const* keysIn, uint8_t* keysOut, uint32_t const* valsIn, uint32_t* valsOut, uint64_t n,
        int /* endBit */)
    {
        std::vector<uint64_t> start(257, 0);
        for (uint64_t i = 0; i < n; ++i)
        {
            ++start[keysIn[i] + 1];
        }
        std::partial_sum(start.begin(), start.end(), start.begin());
        for (uint64_t i = 0; i < n; ++i)
        {
            uint64_t const at = start[keysIn[i]]++;
            keysOut[at] = keysIn[i];
            valsOut[at] = valsIn[i];
        }
    }

    // sum and segmentedSum take from the arena what the GPU executor takes (its terms
    // and segment tables), so that a CPU run inside the workspace bound proves the bound.
    template <typename F>
    uint64_t sum(uint64_t n, F const& f)
    {
        Arena::Scope temporaries(mArena);
        if (n > 0 && (!mArena.take<unsigned long long>(n) || !mArena.take<unsigned long long>(1)))
        {
            return 0;
        }
        uint64_t acc = 0;
        for (uint64_t i = 0; i < n; ++i)
        {
            acc += f(i);
        }
        return acc;
    }

    //! K sums in one pass: f(i, acc) adds into acc[0..K).
    template <int K, typename F>
    void sums(uint64_t n, uint64_t* hostOut, F const& f)
    {
        Arena::Scope temporaries(mArena);
        if (!mArena.take<unsigned long long>(K))
        {
            return;
        }
        uint64_t acc[K] = {};
        for (uint64_t i = 0; i < n; ++i)
        {
            f(i, acc);
        }
        for (int j = 0; j < K; ++j)
        {
            hostOut[j] = acc[j];
        }
    }

    template <typename F>
    void segmentedSum(uint32_t segments, uint64_t const* begin, uint64_t const* end, uint64_t* out, F const& f)
    {
        Arena::Scope temporaries(mArena);
        if (segments > 0
            && (!mArena.take<uint64_t>(segments) || !mArena.take<uint64_t>(segments)
                || !mArena.take<unsigned long long>(segments)))
        {
            return;
        }
        for (uint32_t s = 0; s < segments; ++s)
        {
            uint64_t acc = 0;
            for (uint64_t r = begin[s]; r < end[s]; ++r)
            {
                acc += f(s, r);
            }
            out[s] = acc;
        }
    }

    void toHost(void* dst, void const* src, size_t bytes)
    {
        std::memcpy(dst, src, bytes);
    }

    void toDevice(void* dst, void const* src, size_t bytes)
    {
        std::memcpy(dst, src, bytes);
    }

    void zero(void* p, size_t bytes)
    {
        std::memset(p, 0, bytes);
    }

    bool ok() const
    {
        return !mArena.failed();
    }

private:
    template <typename T>
    static void exclusiveScan(T const* in, T* out, uint64_t n)
    {
        T acc = 0;
        for (uint64_t i = 0; i < n; ++i)
        {
            T const v = in[i]; // in and out may be the same array
            out[i] = acc;
            acc += v;
        }
    }

    Arena mArena;
};

} // namespace par
} // namespace slicer

#endif // SLICER_EXEC_HOST_H
