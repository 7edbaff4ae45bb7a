"""Studies built on the public API of gmmjax, fenced off from the library.

Each study is a subpackage that imports only public names (``import gmmjax``,
``from gmmjax import toy, ...``): deleting ``gmmjax/_studies`` touches nothing
but the command line's import of it. ``saddle`` is ``gmmjax study saddle``.
"""

__all__: list[str] = []
