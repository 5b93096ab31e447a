"""Reading the configuration file: ``${VAR}`` from the environment, YAML that refuses a key
given twice, and a validation error told as one sentence per mistake, with its key path and
never a secret."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from syncd.config import Config
from syncd.errors import ConfigError
from syncd.redact import redact

_ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_SECRET_KEYS = ("password", "token", "dsn")


def interpolate(value: Any, environ: dict[str, str] | os._Environ[str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed document."""
    if isinstance(value, dict):
        return {
            k: interpolate(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set and has no default")

    return _ENV_REFERENCE.sub(substitute, value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    PyYAML keeps the last of two equal keys, so a second ``syncs:`` block would
    silently replace the first, and so would a repeated key at any depth.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' brings in defaults that the keys beside it may override
            key = self.construct_object(key_node, deep=deep)
            try:
                first = first_seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: PyYAML refuses it with a message of its own
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    problem=f"the key {key!r} is given twice in one mapping"
                    f" (first on line {first.line + 1})",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate the file at ``path``; raise ConfigError on any flaw."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    if document is None:
        raise ConfigError(f"{path}: the file holds no settings; it needs 'target' and 'syncs'")
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {_kind(document)}")
    document = interpolate(document, os.environ if environ is None else environ)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration:\n" + describe(exc)) from None
    if config.api.token is not None and not config.api.token.get_secret_value():
        config = config.model_copy(update={"api": config.api.model_copy(update={"token": None})})
    return config


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where the YAML went wrong and what PyYAML found, without its quote of the line,
    which would show whatever that line holds, a password included."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return "not valid YAML: " + " ".join(str(error).split())
    where = f"line {error.problem_mark.line + 1}, column {error.problem_mark.column + 1}"
    context = f" ({error.context})" if error.context else ""
    return f"{where}: not valid YAML: {error.problem}{context}"


def describe(error: ValidationError) -> str:
    """One line per problem: key path, what was expected, what was found."""
    lines = []
    for item in error.errors(include_url=False):
        keys, _ = _resolve(item["loc"])
        location = ".".join(str(key) for key in keys)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            unknown = str(keys[-1])
            _, parent = _resolve(item["loc"][:-1])
            valid = sorted(parent.model_fields) if parent is not None else []
            message = f"unknown key {unknown!r}"
            guess = difflib.get_close_matches(unknown, valid, n=1)
            if guess:
                message += f"; did you mean {guess[0]!r}?"
            lines.append(f"  {location}: {message}")
            continue
        if item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # pydantic places a missing or unknown 'kind' at the source that lacks it.
            location += "." + item["ctx"]["discriminator"].strip("'")
        if item["type"] in ("missing", "union_tag_not_found"):
            lines.append(f"  {location}: required key is missing")
            continue
        if item["type"] == "union_tag_invalid":
            expected, found = item["ctx"]["expected_tags"], _shown(item["ctx"]["tag"])
            lines.append(f"  {location}: expected one of {expected} (found {found})")
            continue
        if not keys:
            # Config's own checks compare keys across the file, and each names its key path.
            lines.append(f"  {message}")
            continue
        secret = any(key in str(keys[-1]) for key in _SECRET_KEYS)
        # "found a mapping" tells something only where another type was expected; a check
        # of a whole mapping or list names what is wrong with it in its own words.
        of_a_whole = isinstance(item["input"], dict | list) and not item["type"].endswith("_type")
        found = "" if secret or of_a_whole else f" (found {_shown(item['input'])})"
        lines.append(f"  {location}: {message}{found}")
    return "\n".join(lines)


def _resolve(loc: Sequence[int | str]) -> tuple[list[int | str], type[BaseModel] | None]:
    """The key path the user wrote, from pydantic's location (which also names the
    member chosen in each tagged union), and the model whose mapping that path ends on."""
    annotation: Any = Config
    discriminator: object = None
    keys: list[int | str] = []
    remaining = list(loc)
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *metadata = get_args(annotation)
            discriminator = next(
                (m.discriminator for m in metadata if isinstance(m, FieldInfo)), None
            )
            continue
        if get_origin(annotation) in (Union, UnionType):
            members = [m for m in get_args(annotation) if m is not NoneType]
            if len(members) == 1:  # X | None: pydantic names no member
                annotation = members[0]
                continue
            by_tag = {_tag(member, discriminator): member for member in members}
            if not remaining or remaining[0] not in by_tag:
                break
            annotation = by_tag[remaining.pop(0)]
            continue
        if not remaining:
            break
        part = remaining.pop(0)
        keys.append(part)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = None if field is None else field.annotation
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            annotation = None
    model = (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )
    return keys + remaining, model


def _tag(member: Any, discriminator: object) -> object:
    """The name pydantic puts in a location for this member of a tagged union: its
    ``Tag``, or the value of its discriminator field."""
    if get_origin(member) is Annotated:
        return next((m.tag for m in get_args(member)[1:] if isinstance(m, Tag)), None)
    if isinstance(discriminator, str):
        return get_args(member.model_fields[discriminator].annotation)[0]
    return None


def _shown(value: object) -> str:
    if isinstance(value, dict | list):
        return _kind(value)
    return redact(repr(value))


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__
