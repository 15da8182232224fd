"""The scenario: schema, strict YAML loading, ``--set`` overrides, resolution.

A scenario file is validated once, here, at the edge, and after loading code
trusts the config and never re-checks it. Errors are
:class:`fedsim.errors.InputError` messages that name the file, the dotted key
path, the bad value and what was expected::

    scenarios/mobile.yaml: system.clients.uplink: value must be > 0 (got '-3 Mbps')

Modules, in the order a scenario meets them:

* `loading`: `read_yaml` (defensive reading), `apply_overrides` (``--set``),
  `load` / `from_dict`, `select_methods`, `check_output_dir`;
* `schema`: `Scenario` and its own sections, the checks across sections;
* `paths`: dotted key paths (check, get, set), shared with studies;
* `errors`: `format_validation_error`, shared with studies;
* `dump`: `to_plain`, `resolved_yaml`, `section_key` (cache keys), `slug`.

(The module is ``loading``, not ``load``: the function `load` would hide it.)
Importing this package, loading and validating a scenario import neither
torch nor simpy (tests/test_import_light.py; docs/performance.md).
"""

from fedsim.config.dump import resolved_yaml, section_key, slug, to_plain
from fedsim.config.errors import MAX_MESSAGE_CHARS, format_validation_error
from fedsim.config.loading import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    apply_overrides,
    check_output_dir,
    from_dict,
    load,
    parse_override,
    read_text,
    read_yaml,
    select_methods,
)
from fedsim.config.paths import (
    annotation_keys,
    check_key_path,
    child_annotation,
    get_path,
    set_path,
    valid_keys,
)
from fedsim.config.schema import (
    MAX_NAME_CHARS,
    ReportConfig,
    RoundsConfig,
    Scenario,
    fastest_round_s,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_MESSAGE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_NODES",
    "ReportConfig",
    "RoundsConfig",
    "Scenario",
    "annotation_keys",
    "apply_overrides",
    "check_key_path",
    "check_output_dir",
    "child_annotation",
    "fastest_round_s",
    "format_validation_error",
    "from_dict",
    "get_path",
    "load",
    "parse_override",
    "read_text",
    "read_yaml",
    "resolved_yaml",
    "section_key",
    "select_methods",
    "set_path",
    "slug",
    "to_plain",
    "valid_keys",
]
