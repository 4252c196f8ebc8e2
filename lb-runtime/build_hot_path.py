"""Build lb-runtime's compiled hot path: ``backends``, ``stats``, ``http_head`` and ``http_proxy`` (each
NAME.py with its NAME.pxd of Cython declarations) through Cython into the extensions
``lb_runtime._NAME_compiled``, placed beside the sources (where the editable install and the wheel both find them).

The pure-Python modules stay the one source and the fallback: the build compiles copies of them, stamped with
the sources' SHA-256, and ``lb_runtime.hot_path`` uses the extensions only when that stamp matches the files
beside them (an edited source is never shadowed by a stale build). A machine without Cython or a C
compiler simply has no extension and runs the pure-Python path.

Two ways in:
- ``python lb-runtime/build_hot_path.py [--if-stale]`` (infrastructure/local/bootstrap.sh runs it);
- as hatchling's custom build hook (pyproject.toml ``[tool.hatch.build.hooks.custom]``) during
  ``pip install -e .[dev]`` or a wheel build; a failure there is reported and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent / "lb_runtime"
# The hot path's modules, in dependency order; each NAME.py + NAME.pxd becomes lb_runtime._NAME_compiled.
MODULES = ("stats", "backends", "http_head", "http_proxy")
STAMP_NAME = "COMPILED_FROM_SHA256"
# The digest of the last build's sources, for --if-stale (the modules carry it too, for lb_runtime.hot_path).
STAMP_FILE = PACKAGE_DIR / "_compiled.sha256"


def compiled_name(module: str) -> str:
    return f"_{module}_compiled"


def source_files() -> list[Path]:
    """Every file a build is made from (the stamp covers them all; lb_runtime.hot_path checks the same list)."""
    return [PACKAGE_DIR / f"{module}.{suffix}" for module in MODULES for suffix in ("py", "pxd")]


def source_digest() -> str:
    """The SHA-256 of the sources (what a compiled build must have been made from)."""
    return hashlib.sha256(b"".join(path.read_bytes() for path in source_files())).hexdigest()


def built_extensions() -> list[Path]:
    """The compiled modules for this interpreter that are in the package directory."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    paths = [PACKAGE_DIR / (compiled_name(module) + suffix) for module in MODULES]
    return [path for path in paths if path.exists()]


def is_stale() -> bool:
    """True when an extension is missing or was built from other sources."""
    if len(built_extensions()) != len(MODULES):
        return True
    try:
        return STAMP_FILE.read_text().strip() != source_digest()
    except OSError:
        return True


def _rename_imports(text: str) -> str:
    # The compiled modules import each other, never the pure ones (whose classes would mix with theirs).
    for module in MODULES:
        text = text.replace(f"lb_runtime.{module} ", f"lb_runtime.{compiled_name(module)} ")
    return text


def build() -> list[Path]:
    """Compile the extensions into the package directory; returns their paths. Raises when Cython or cc fail."""
    from Cython.Build import cythonize  # build-time only
    from setuptools import Distribution, Extension

    with tempfile.TemporaryDirectory(prefix="berth-lb-build-") as tmp_name:
        tmp = Path(tmp_name)
        package = tmp / "lb_runtime"
        package.mkdir()
        (package / "__init__.py").write_text("")
        digest = source_digest()
        extensions = []
        for module in MODULES:
            name = compiled_name(module)
            copy = package / f"{name}.py"
            copy.write_text(
                _rename_imports((PACKAGE_DIR / f"{module}.py").read_text()) + f'\n{STAMP_NAME} = "{digest}"\n'
            )
            (package / f"{name}.pxd").write_text(_rename_imports((PACKAGE_DIR / f"{module}.pxd").read_text()))
            extensions.append(Extension(f"lb_runtime.{name}", [str(copy)], extra_compile_args=["-O2"]))
        extensions = cythonize(
            extensions,
            compiler_directives={
                "language_level": 3,
                "boundscheck": False,
                "wraparound": False,
                "annotation_typing": False,  # the .pxd declares the types; the .py's hints are for mypy
            },
            build_dir=str(tmp / "c"),
            quiet=True,
        )
        distribution = Distribution({"name": "lb-runtime-hot-path", "ext_modules": extensions})
        command: Any = distribution.get_command_obj("build_ext")
        command.build_lib = str(tmp / "lib")
        command.build_temp = str(tmp / "temp")
        command.ensure_finalized()
        command.run()
        targets = []
        for built in sorted((tmp / "lib" / "lb_runtime").iterdir()):
            target = PACKAGE_DIR / built.name
            # Written beside and renamed: a running lb-runtime keeps its mapped copy intact.
            shutil.copyfile(built, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
            targets.append(target)
    STAMP_FILE.write_text(digest + "\n")
    return targets


def main(argv: list[str]) -> int:
    if "--if-stale" in argv and not is_stale():
        print("lb-runtime hot path: compiled module up to date")
        return 0
    try:
        targets = build()
    except Exception as exc:  # no Cython, no compiler, no Python headers: the pure-Python path serves
        print(f"lb-runtime hot path: not compiled ({type(exc).__name__}: {exc}); the pure-Python path serves")
        return 0 if "--optional" in argv else 1
    print(f"lb-runtime hot path: built {', '.join(target.name for target in targets)}")
    return 0


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script in an environment without hatchling
    pass
else:

    class CompiledHotPathHook(BuildHookInterface):  # type: ignore[type-arg]
        """Compiles the hot path while hatchling builds (wheel or editable); skipped when that fails."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            try:
                targets = build()
            except Exception as exc:
                self.app.display_warning(f"lb-runtime hot path not compiled ({exc}); the pure-Python path serves")
                return
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            if version != "editable":  # an editable install finds the modules in the source tree
                for target in targets:
                    build_data["force_include"][str(target)] = f"lb_runtime/{target.name}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
