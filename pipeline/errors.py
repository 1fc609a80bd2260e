"""The errors a user can cause and fix; the CLI shows them as one line, without a traceback."""


class PipelineError(Exception):
    """Bad input or state that the user can correct; the message says where and what."""


class ConfigError(PipelineError):
    pass


class ContentError(PipelineError):
    """A content file is broken: the message is ``path:line: field: problem``."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = path, line, field, problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


def require_extra(extra: str, *modules: str) -> None:
    """A clear error when an optional feature's packages are not installed."""
    import importlib.util  # only when an extra is checked: errors.py stays a leaf

    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise PipelineError(f"this needs {', '.join(missing)}: pip install 'newsletter-pipeline[{extra}]'")
