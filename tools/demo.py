#!/usr/bin/env python3
"""The README's first command ends here: report on the installed stack."""
import sys

from fcaformer_mm.utils import collect_env, format_env_report


def main() -> int:
    """Print the environment report; fail if a needed part is missing."""
    env = collect_env()
    print(format_env_report(env))
    problems = [name for name in ('mmcv', 'mmpretrain', 'mmseg', 'mmdet')
                if not env['versions'][name][:1].isdigit()]
    if env['mmcv_ops'] != 'yes':
        problems.append('mmcv ops')
    if problems:
        print(f'\nmissing or broken: {", ".join(problems)}; run '
              '`python3 tools/install.py` again and read its messages.',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
