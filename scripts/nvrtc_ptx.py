"""Compiles a CUDA source to PTX with NVRTC through ctypes: nvrtc_ptx.py LIBNVRTC SRC OUT."""
import ctypes
import sys

lib_path, src_path, out_path = sys.argv[1:4]
nvrtc = ctypes.CDLL(lib_path)


def check(status, what, prog=None):
    if status != 0:
        msg = nvrtc.nvrtcGetErrorString
        msg.restype = ctypes.c_char_p
        detail = ""
        if prog is not None:
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(prog, log)
            detail = log.value.decode(errors="replace")
        sys.exit(f"{what}: {msg(status).decode()}\n{detail}")


src = open(src_path, "rb").read()
prog = ctypes.c_void_p()
check(nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, src_path.encode(), 0, None, None),
      "nvrtcCreateProgram")
opts = [b"--gpu-architecture=compute_90"]
arr = (ctypes.c_char_p * len(opts))(*opts)
check(nvrtc.nvrtcCompileProgram(prog, len(opts), arr), "nvrtcCompileProgram", prog)
size = ctypes.c_size_t()
check(nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
ptx = ctypes.create_string_buffer(size.value)
check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
with open(out_path, "wb") as f:
    f.write(ptx.value)
