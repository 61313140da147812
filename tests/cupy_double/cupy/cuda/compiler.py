"""``cupy.cuda.compiler`` of the double: the error a failed kernel compile raises."""

from cupy import _core


class CompileException(Exception):
    """NVRTC rejected the source or an option; the message has the compiler's log."""

    def __init__(self, msg: str, source: str = "", name: str = "", options: tuple = (),
                 backend: str = "nvrtc") -> None:
        self._msg, self.source, self.name, self.options, self.backend = (msg, source, name,
                                                                         options, backend)
        super().__init__(msg)


_core.verify_namespace("cupy.cuda.compiler", globals())
