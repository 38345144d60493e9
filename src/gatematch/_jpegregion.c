/* Decoding a region of a JPEG frame (libjpeg-turbo's jpeg_crop_scanline and jpeg_skip_scanlines).
 *
 * A followed face needs a few hundred pixels of a frame that may hold two million; the rows above the region
 * are only entropy-decoded (no inverse DCT, upsampling or colour conversion), the columns beside it and the rows
 * below are not decoded at all. The pixels written are the whole-frame decode's (same DCT, same fancy upsampling,
 * BGR): the caller asks for one pixel more on each side than it reads, where the chroma upsampling of the cut
 * edge differs.
 *
 * Strict like simplejpeg's decode_jpeg(strict=True) over the rows it decodes: any libjpeg warning (corrupt data,
 * premature end) is an error. The data below the region's last row is not read: skipping to the end stops the
 * decoder there. The GIL is released while libjpeg runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#define ROWS_PER_READ 16

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} strict_errors;

static void fail(j_common_ptr cinfo) {
    strict_errors *errors = (strict_errors *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, errors->message);
    longjmp(errors->jump, 1);
}

static void warn_as_error(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: corrupt data libjpeg would paper over */
        fail(cinfo);
    }
}

/* decode_region(data, out, width, height, x1, y1, x2, y2) -> (x1, x2): rows y1..y2-1 of the width x height
 * frame written into `out` (its H*W*3 BGR bytes, row-major) over at least columns x1..x2-1; returns the columns
 * written (libjpeg widens them to its block grid). */
static PyObject *decode_region(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data, out;
    int expected_width, expected_height, x1, y1, x2, y2;
    if (!PyArg_ParseTuple(args, "y*w*iiiiii", &data, &out, &expected_width, &expected_height, &x1, &y1, &x2,
                          &y2)) {
        return NULL;
    }
    struct jpeg_decompress_struct cinfo;
    strict_errors errors;
    volatile int created = 0;
    const char *problem = NULL;
    volatile int unsupported = 0;
    JDIMENSION first = 0, count = 0;
    memset(&cinfo, 0, sizeof(cinfo));
    errors.message[0] = '\0';
    cinfo.err = jpeg_std_error(&errors.pub);
    errors.pub.error_exit = fail;
    errors.pub.emit_message = warn_as_error;

    Py_BEGIN_ALLOW_THREADS
    if (setjmp(errors.jump)) {
        problem = errors.message;
    } else {
        jpeg_create_decompress(&cinfo);
        created = 1;
        jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        if (cinfo.num_components != 3 && cinfo.num_components != 1) {
            unsupported = 1;
            problem = "only greyscale and three-component JPEGs are decoded by region";
        } else {
            cinfo.out_color_space = JCS_EXT_BGR;
            jpeg_start_decompress(&cinfo);
            JDIMENSION width = cinfo.output_width, height = cinfo.output_height;
            if ((JDIMENSION)expected_width != width || (JDIMENSION)expected_height != height ||
                (Py_ssize_t)width * height * 3 != out.len) {
                problem = "the frame's size differs from its header's, or the output buffer's from both";
            } else if (x1 < 0 || y1 < 0 || x2 <= x1 || y2 <= y1 || (JDIMENSION)x2 > width ||
                       (JDIMENSION)y2 > height) {
                problem = "the region is not inside the frame";
            } else {
                first = (JDIMENSION)x1;
                count = (JDIMENSION)(x2 - x1);
                if (count < width) {
                    jpeg_crop_scanline(&cinfo, &first, &count);
                }
                if (y1 > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)y1) != (JDIMENSION)y1) {
                    problem = "the rows above the region could not be skipped";
                } else {
                    unsigned char *pixels = (unsigned char *)out.buf;
                    size_t stride = (size_t)width * 3;
                    JSAMPROW rows[ROWS_PER_READ];
                    while (cinfo.output_scanline < (JDIMENSION)y2) {
                        JDIMENSION want = (JDIMENSION)y2 - cinfo.output_scanline;
                        if (want > ROWS_PER_READ) {
                            want = ROWS_PER_READ;
                        }
                        for (JDIMENSION i = 0; i < want; i++) {
                            rows[i] = pixels + (cinfo.output_scanline + i) * stride + (size_t)first * 3;
                        }
                        if (jpeg_read_scanlines(&cinfo, rows, want) == 0) {
                            problem = "the decoder stopped before the region's last row";
                            break;
                        }
                    }
                    if (problem == NULL && cinfo.output_scanline < height) {
                        /* the rows below are not decoded: skipping to the end stops the decoder there */
                        jpeg_skip_scanlines(&cinfo, height - cinfo.output_scanline);
                    }
                    if (problem == NULL) {
                        jpeg_finish_decompress(&cinfo);
                    }
                }
            }
        }
    }
    if (created) {
        jpeg_destroy_decompress(&cinfo);
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (problem != NULL) {
        PyErr_SetString(unsupported ? PyExc_NotImplementedError : PyExc_ValueError,
                        problem[0] ? problem : "libjpeg failed without a message");
        return NULL;
    }
    return Py_BuildValue("(II)", first, first + count);
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, out, width, height, x1, y1, x2, y2) -> (x1, x2): rows y1..y2-1 of the width x height "
     "JPEG `data` decoded (BGR) into `out`, its writable H*W*3 bytes, over at least columns x1..x2-1; returns the "
     "columns written. "
     "ValueError with libjpeg's message for corrupt data (warnings included); NotImplementedError for a JPEG of "
     "other than 1 or 3 components."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion", "Region decoding of JPEG frames (libjpeg-turbo).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpegregion(void) { return PyModule_Create(&module); }
