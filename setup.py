"""The package build compiles the capture program (every src/textrace/bpf/capture/*.bpf.c)
into CO-RE objects placed beside their sources in the build tree, so the wheel ships them
and an installed textrace needs no clang.  Building from the sdist needs clang and the
headers of libbpf-dev and linux-libc-dev; without them the build stops and says so.
It also compiles textrace.compiled (src/textrace/compiled.c), the few loops numpy cannot
vectorize, and textrace.demangler (src/textrace/demangler.c), perf's demangler: it links
libiberty-dev's static libiberty.a.  An editable install (scripts/setup.sh) builds no
capture object here: the loader builds it into ~/.cache/textrace on first use, and
scripts/setup.sh ahead of time, with both extensions in place (build_ext --inplace, again
whenever a source is newer).
Everything else is declared in pyproject.toml.
"""

import glob
import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

CAPTURE = os.path.join("src", "textrace", "bpf", "capture")


def _capture_build():
    """textrace/bpf/capture/build.py, loaded alone (textrace's dependencies are absent)."""
    spec = importlib.util.spec_from_file_location("_textrace_capture_build",
                                                  os.path.join(CAPTURE, "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithCapture(build_py):
    """build_py, then clang on every capture program source into the build tree."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        build = _capture_build()
        out_dir = os.path.join(self.build_lib, "textrace", "bpf", "capture")
        for stale in glob.glob(os.path.join(out_dir, "*.bpf.o")):  # of an earlier source
            os.remove(stale)
        try:
            self._capture_objects = build.compile_all(out_dir, CAPTURE)
        except build.CompileError as e:
            sys.exit(f"textrace: cannot build the in-kernel capture program ({e}); building "
                     f"textrace needs {build.BUILD_NEEDS}")
        for path in self._capture_objects:
            print(f"textrace: built {path}")

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + getattr(self, "_capture_objects", [])


setup(cmdclass={"build_py": BuildPyWithCapture},
      ext_modules=[Extension("textrace.compiled", [os.path.join("src", "textrace", "compiled.c")],
                             extra_compile_args=["-O2", "-std=c11"]),
                   Extension("textrace.demangler",
                             [os.path.join("src", "textrace", "demangler.c")],
                             extra_compile_args=["-O2", "-std=c11"], libraries=["iberty"])])
