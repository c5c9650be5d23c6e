"""Errors that reach the user: each says what went wrong, where, and how to fix it."""


class LrpGraphError(Exception):
    """A problem with the user's model, input or options; the CLI prints it and exits 2."""

    exit_code = 2


class UnsupportedOpsError(LrpGraphError):
    """Nodes on the relevance path that no rule in ``rules/`` covers (or a rule refused)."""

    def __init__(self, problems):
        # problems: list of (node name, op type, reason)
        self.problems = list(problems)
        lines = [f"  {op:<22} {name!r}: {reason}" for name, op, reason in self.problems]
        super().__init__(
            f"{len(self.problems)} node(s) on the relevance path have no usable LRP rule; "
            "nothing was written:\n" + "\n".join(lines) + "\n"
            "Add a rule module under rules/ for the op type (one file + its test), "
            "or export the model without these ops."
        )
