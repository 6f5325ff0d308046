"""Version of fcaformer_mm."""

__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Split a version string such as ``'0.1.0rc1'`` into a comparable tuple.

    Args:
        version_str (str): The version string.

    Returns:
        tuple: Integers for the numeric parts, then the pre-release tag if any,
        e.g. ``(0, 1, 0, 'rc1')``.
    """
    parts = []
    for piece in version_str.split('.'):
        if piece.isdigit():
            parts.append(int(piece))
        else:
            digits = ''.join(ch for ch in piece if ch.isdigit())
            rest = piece[len(digits):]
            if digits:
                parts.append(int(digits))
            parts.append(rest)
    return tuple(parts)


version_info = parse_version_info(__version__)
