"""What every command line's `run()` shares: absl's `app.run`, with `--help`
listing the command's own flags however it was started."""

import sys

from absl import app
from absl import flags


def run(main, module_name):
    """`app.run(main)` for the command line defined in module `module_name`.

    absl's `--help` lists the key flags of the module `sys.argv[0]` names:
    the command's module under `python -m`, but under a console script
    (`vgg-train`) the wrapper that pip writes, which defines none.  So the
    module's flags are made key flags of `sys.argv[0]` too.
    """
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
