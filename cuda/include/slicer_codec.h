/*
 * slicer-compile codec: C ABI.
 *
 * Host functions (libslicer_host.so and libslicer_cuda.so) implement the wire
 * format's bit-level pieces exactly as the numpy reference does
 * (slicer_compile/codec/positions.py, bits.py, wire.py); the test suite checks
 * them byte for byte through ctypes. Device launchers (libslicer_cuda.so only)
 * take raw pointers and a cudaStream_t, no framework types.
 *
 * Every function returns a slicer_status; output buffers are sized by the
 * caller (the *_max_bytes helpers give bounds) and never written past capacity.
 */
#ifndef SLICER_CODEC_H
#define SLICER_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum
{
    SLICER_OK = 0,
    SLICER_ERR_ARGUMENT = 1,  /* a null pointer, a width out of range, unsorted indices */
    SLICER_ERR_CAPACITY = 2,  /* the output buffer is too small */
    SLICER_ERR_PAYLOAD = 3,   /* a malformed or inconsistent input stream */
    SLICER_ERR_CUDA = 4       /* a CUDA call failed */
} slicer_status;

/* Position-section methods (first byte of a subset section). */
enum
{
    SLICER_SUBSET_TRIVIAL = 0,
    SLICER_SUBSET_BITMAP = 1,
    SLICER_SUBSET_FIXED = 2,
    SLICER_SUBSET_GOLOMB = 3,
    SLICER_SUBSET_GOLOMB_COMPLEMENT = 4
};

/* --- host: bit packing, MSB first, zero-padded to a byte ------------------------ */

size_t slicer_packed_nbytes(uint64_t count, int width);
slicer_status slicer_pack_uint(const uint64_t* values, uint64_t count, int width, uint8_t* out, size_t capacity,
    size_t* written);
slicer_status slicer_unpack_uint(const uint8_t* buf, size_t len, uint64_t count, int width, uint64_t* out);

/* --- host: position coding ------------------------------------------------------- */

/* Worst case of slicer_encode_subset for any count <= max_count (as predict_bits counts it). */
size_t slicer_subset_max_nbytes(uint64_t max_count, uint64_t space);
/* Code n strictly increasing indices below space; picks the smallest method. */
slicer_status slicer_encode_subset(const int64_t* indices, uint64_t count, uint64_t space, uint8_t* out,
    size_t capacity, size_t* written);
slicer_status slicer_decode_subset(const uint8_t* buf, size_t len, uint64_t count, uint64_t space, int64_t* out);
/* SLICER_OK when a position section's length fits its method for count of space: what a
   decoder checks of every section before it allocates anything sized by a count. */
slicer_status slicer_check_subset_length(const uint8_t* buf, size_t len, uint64_t count, uint64_t space);

/* Mixed-radix label words: (labels per word, bits per word) for a base. */
void slicer_label_chunk(int base, int* per_word, int* bits);
slicer_status slicer_encode_labels(const uint8_t* labels, uint64_t count, int base, uint8_t* out, size_t capacity,
    size_t* written);
slicer_status slicer_decode_labels(const uint8_t* buf, size_t len, uint64_t count, int base, uint8_t* out);
/* SLICER_OK when a label section of len bytes is the size count labels in base need. */
slicer_status slicer_check_labels_length(size_t len, uint64_t count, int base);

/* --- host: framing --------------------------------------------------------------- */

uint32_t slicer_crc32(const uint8_t* data, size_t len, uint32_t crc);

/* --- host: the whole SLICER encoder (codec id 1) --------------------------------- */

typedef struct
{
    float sparsity; /* s in [0, 1) */
    float lam;      /* λ in (-1, 1) */
    float delta;    /* DS budget, >= 0 */
    int blocksPos;  /* M+ in [1, 64] */
    int blocksNeg;  /* M- in [1, 64] */
    int qBits;      /* [1, 16] */
    int qMin;       /* [1, qBits] */
} slicer_knobs;

/*
 * Seven knobs in the one order (s, lam, delta, M+, M-, q_bits, q_min: the wire
 * header's and the SlicerEncode node's knobs input) into a slicer_knobs, with the one
 * range check; SLICER_ERR_ARGUMENT if a value is out of range or not whole.
 */
slicer_status slicer_knobs_from_values(const float* values, slicer_knobs* knobs);

/*
 * Encode T = prod(shape) finite float32 values (float16 inputs upcast by the caller,
 * dtypeCode 2 recorded) into a complete payload, byte for byte as the numpy
 * reference. `written` receives the size even when the capacity is too small.
 */
slicer_status slicer_encode_host(const float* x, const uint32_t* shape, int ndim, int dtypeCode,
    const slicer_knobs* knobs, uint8_t* out, size_t capacity, size_t* written);

/*
 * The encoder after ATKF: the kept flat indices (ascending) and their values, as a
 * device selection (slicer_cuda_select_kept) hands them over. MS, ABQ, position
 * coding and the frame, byte for byte as the numpy reference.
 */
slicer_status slicer_encode_from_kept(const int64_t* kept, const float* values, uint64_t keptCount,
    const uint32_t* shape, int ndim, int dtypeCode, const slicer_knobs* knobs, uint8_t* out, size_t capacity,
    size_t* written);

/*
 * The same, as the GPU runs it: data-parallel stages (cuda/src/parallel_encode.h)
 * on the host executor, inside a caller workspace of
 * slicer_encode_parallel_workspace_bytes(T) bytes. Byte for byte as the numpy
 * reference; the CPU check of the device encoder's stages.
 */
size_t slicer_encode_parallel_workspace_bytes(uint64_t maxElements);
slicer_status slicer_encode_from_kept_parallel(const int64_t* kept, const float* values, uint64_t keptCount,
    const uint32_t* shape, int ndim, int dtypeCode, const slicer_knobs* knobs, void* workspace, size_t workspaceBytes,
    uint8_t* out, size_t capacity, size_t* written);

typedef struct
{
    uint64_t maxElements;     /* largest tensor a payload may describe */
    uint64_t maxPayloadBytes; /* largest payload accepted at all */
} slicer_limits;

/*
 * Decode a SLICER payload (codec id 1) into T float32 values, validating every
 * length, count and index first, exactly as the numpy decoder: it returns
 * SLICER_ERR_PAYLOAD for every payload numpy refuses with PayloadError, and the
 * same values otherwise (a float16 payload's values are returned as float32 and
 * convert exactly). shape receives up to 8 dims; `elements` the count written.
 */
slicer_status slicer_decode_host(const uint8_t* payload, size_t len, const slicer_limits* limits, float* out,
    uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode, uint64_t* elements);

/*
 * The decoder's O(k) half, as slicer_cuda_decode uses it: the same validation as
 * slicer_decode_host, then the kept flat positions (ascending) and their values
 * instead of a dense tensor. `keptCount` receives the count even when `capacity`
 * is too small (SLICER_ERR_CAPACITY), so a first call with capacity 0 sizes the buffers.
 */
slicer_status slicer_decode_sparse_host(const uint8_t* payload, size_t len, const slicer_limits* limits,
    int64_t* positions, float* values, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements, uint64_t* keptCount);

/*
 * The decoder as the GPU runs it (cuda/src/parallel_decode.h), on the host executor
 * inside slicer_decode_parallel_workspace_bytes(T, len) bytes: the numpy decoder's
 * values and refusals. `elements` receives T also when `capacity` is too small.
 */
size_t slicer_decode_parallel_workspace_bytes(uint64_t maxElements, uint64_t maxPayloadBytes);
slicer_status slicer_decode_parallel_host(const uint8_t* payload, size_t len, const slicer_limits* limits,
    void* workspace, size_t workspaceBytes, float* out, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements);

/* --- device launchers (libslicer_cuda.so) ----------------------------------------
 * Pointers are device memory unless named host*; every launcher is asynchronous on
 * `stream` unless it says otherwise. slicer_stream_t is cudaStream_t.
 */
struct CUstream_st;
typedef struct CUstream_st* slicer_stream_t;

size_t slicer_cuda_select_workspace_bytes(size_t n);
/* ATKF: ascending flat indices of the min(k, nnz) highest scores, and their count. */
slicer_status slicer_cuda_select_kept(const float* x, size_t n, uint64_t k, float lam, void* workspace,
    size_t workspaceBytes, int64_t* kept, int64_t* keptCount, slicer_stream_t stream);
slicer_status slicer_cuda_quantize(const float* magnitudes, const uint32_t* groupOf, const float* lo,
    const float* step, const uint32_t* levels, size_t n, uint32_t* codes, slicer_stream_t stream);
slicer_status slicer_cuda_dequantize_scatter(const uint32_t* codes, const int64_t* positions,
    const uint32_t* groupOf, const float* lo, const float* step, const uint8_t* negative, size_t n, float* out,
    slicer_stream_t stream);
size_t slicer_cuda_encode_workspace_bytes(size_t n);
/* A whole payload from a device tensor (synchronises the stream); host buffers of T entries. */
slicer_status slicer_cuda_encode(const float* x, const uint32_t* shape, int ndim, int dtypeCode,
    const slicer_knobs* knobs, void* workspace, size_t workspaceBytes, int64_t* hostKept, float* hostValues,
    uint8_t* out, size_t capacity, size_t* written, slicer_stream_t stream);
size_t slicer_cuda_encode_device_workspace_bytes(size_t n);
/*
 * The whole encoder on the device (ATKF, then the data-parallel stages that the CPU
 * tests run through slicer_encode_from_kept_parallel): the payload is written to
 * `out` in device memory; `written` (host) receives its size. Synchronises the
 * stream a few times for counts and the block table.
 */
slicer_status slicer_cuda_encode_device(const float* x, const uint32_t* shape, int ndim, int dtypeCode,
    const slicer_knobs* knobs, void* workspace, size_t workspaceBytes, uint8_t* out, size_t capacity, size_t* written,
    slicer_stream_t stream);
size_t slicer_cuda_decode_device_workspace_bytes(uint64_t maxElements, uint64_t maxPayloadBytes);
/*
 * The whole decoder on the device, from a payload in device memory (the stages the
 * CPU tests run through slicer_decode_parallel_host): numpy's values and refusals;
 * `out` is written only once every check has passed.
 */
slicer_status slicer_cuda_decode_device(const uint8_t* payload, size_t len, const slicer_limits* limits,
    void* workspace, size_t workspaceBytes, float* out, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements, slicer_stream_t stream);
/* Device bytes slicer_cuda_decode needs for payloads of up to maxElements elements. */
size_t slicer_cuda_decode_workspace_bytes(uint64_t maxElements);
/*
 * A SLICER payload on the host into a device tensor of T = prod(shape) floats: the
 * host parse validates everything (SLICER_ERR_PAYLOAD as the numpy decoder refuses)
 * and fills the host position/value buffers (pinned, hostCapacity >= T entries,
 * untouched until the stream passes the call); the device zero-fills and scatters.
 */
slicer_status slicer_cuda_decode(const uint8_t* hostPayload, size_t len, const slicer_limits* limits,
    int64_t* hostPositions, float* hostValues, uint64_t hostCapacity, void* workspace, size_t workspaceBytes,
    float* out, uint64_t outCapacity, uint32_t* shape, int* ndim, int* dtypeCode, uint64_t* elements,
    slicer_stream_t stream);
/*
 * Mean device time of `iterations` runs of slicer_cuda_select_kept and of a library
 * baseline (cub::DeviceTopK where the CCCL has it, else a full descending radix
 * sort) on the same device tensor; `baseline` receives the baseline's name.
 */
slicer_status slicer_cuda_bench_select(const float* x, size_t n, uint64_t k, int iterations, float* selectMs,
    float* baselineMs, char* baseline, size_t baselineCapacity, slicer_stream_t stream);
int slicer_cuda_device_count(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SLICER_CODEC_H */
