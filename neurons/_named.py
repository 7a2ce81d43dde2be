"""Enums whose members are also found by name: what ``Activation`` and ``Objective`` share."""
import enum


def _key(name):
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


class Named(enum.Enum):
    """Members print as lower-case names and are found by any spelling of them (case, ``_``,
    ``-`` and spaces ignored), or by an alias."""

    def __str__(self):
        return self.name.lower()

    @classmethod
    def parse(cls, value, kind, aliases=None):
        """The member ``value`` names (or is); ``kind`` names the thing in error messages."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise TypeError(f"{kind} must be a name or {cls.__module__}.{cls.__name__}, not {type(value).__name__}")
        key = _key(value)
        if aliases and key in aliases:
            return cls[aliases[key]]
        for member in cls:
            if _key(member.name) == key:
                return member
        names = ", ".join(str(m) for m in cls)
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {names}")
