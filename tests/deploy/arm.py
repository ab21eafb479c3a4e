"""Offline checks for the ARM templates in ``deploymentTemplates/``.

* ``ArmSchemas``: validates a template against the official ARM JSON schemas copied into ``tests/deploy/arm_schemas``:
  the template's top level against the deployment-template schema, each resource against the definition of its
  own (type, apiVersion). In strict mode every object the schemas describe is closed, so a property name the
  schema does not define (a typo such as ``httpsOnyl``) is an error instead of being ignored.
* ``parse`` / ``Evaluator``: a small interpreter for the ARM template expressions the templates use
  (``[if(equals(parameters('storage'), 'blob'), ...)]``), so that tests can compute what a deployment would set
  for given parameters. What only Azure knows (``reference()`` of a created resource, the subscription) comes
  from a stub the test passes in: Azure itself cannot run here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.support.processes import ROOT

TEMPLATES = ROOT / "deploymentTemplates"
#: Resource types whose schema file is not named after their namespace (as deploymentTemplate.json refers to them).
SCHEMA_FILES = {"Microsoft.Insights/components": "Microsoft.Insights.Application"}
SCHEMA_ROOT = ROOT / "tests" / "deploy" / "arm_schemas" / "schemas"
SCHEMA_URL = "https://schema.management.azure.com/schemas/"

# Keys of a resource that belong to the template language, not to the resource's REST body. The schemas'
# resourceBase defines the first five; resourceGroup and subscriptionId target a nested deployment.
TEMPLATE_ONLY_KEYS = frozenset(
    {"condition", "dependsOn", "copy", "comments", "scope", "resourceGroup", "subscriptionId"}
)


# --------------------------------------------------------------------------------------------------- schemas


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def prepare(node: Any, close: bool) -> Any:
    """Ready a schema document for validating templates (in place). With ``close``, every object schema is
    closed: properties it does not define are refused.

    ``oneOf`` lists that contain the empty schema become ``anyOf`` (see below).

    An object whose variants are ``oneOf``/``anyOf`` branches with their own properties gets its shared
    properties copied into each branch, and each branch is closed; closing the parent too would refuse the
    branches' properties.
    """
    if isinstance(node, list):
        for item in node:
            prepare(item, close)
        return node
    if not isinstance(node, dict):
        return node
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for child in value.values():
                prepare(child, close)
        elif key not in ("enum", "required", "default", "example"):
            prepare(value, close)
    one_of = node.get("oneOf")
    if isinstance(one_of, list) and {} in one_of:
        # "oneOf": [{}, <expression>] (e.g. a nested deployment's parameter value) can never hold for an
        # expression, which matches both branches; the schema's authors mean "anything, or an expression".
        node["anyOf"] = node.pop("oneOf")
    if not close or not isinstance(node.get("properties"), dict) or "additionalProperties" in node:
        return node
    branches = node.get("oneOf") or node.get("anyOf")
    if isinstance(branches, list) and all(isinstance(b, dict) and "properties" in b for b in branches):
        for branch in branches:
            branch["properties"] = {**node["properties"], **branch["properties"]}
            branch.setdefault("additionalProperties", False)
    elif "allOf" not in node and not branches:
        node["additionalProperties"] = False
    return node


_TELLING = frozenset({"additionalProperties", "enum", "required", "minLength", "maxLength", "minimum", "maximum"})


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
    for child in error.context:
        yield from _leaves(child)


@dataclass(frozen=True)
class SchemaProblem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ArmSchemas:
    """The copied ARM schemas, as one registry; ``strict`` closes every object (see ``prepare``)."""

    def __init__(self, strict: bool = True) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        for path in sorted(SCHEMA_ROOT.rglob("*.json")):
            document = load_json(path)
            prepare(document, close=strict)
            self.documents[path.relative_to(SCHEMA_ROOT).as_posix()] = document
        self.registry: Registry = Registry().with_resources(
            (SCHEMA_URL + name, Resource.from_contents(document, default_specification=DRAFT4))
            for name, document in self.documents.items()
        )

    def _validator(self, schema: dict[str, Any], base: str) -> Draft4Validator:
        return Draft4Validator({**schema, "id": SCHEMA_URL + base}, registry=self.registry)

    @staticmethod
    def _problems(validator: Draft4Validator, instance: Any, where: str) -> list[SchemaProblem]:
        problems = []
        for error in validator.iter_errors(instance):
            # Under oneOf the schemas offer "the object" or "an expression string": report the deepest failure,
            # preferring the object branch's (an unknown property, a value outside an enum) to "not a string".
            deepest = max(_leaves(error), key=lambda e: (e.validator in _TELLING, len(e.absolute_path)))
            path = "/".join(str(part) for part in deepest.absolute_path)
            problems.append(SchemaProblem(f"{where}/{path}" if path else where, deepest.message[:400]))
        return problems

    def template_schema_name(self, template: dict[str, Any]) -> str:
        url = template.get("$schema", "").rstrip("#")
        if not url.startswith(SCHEMA_URL):
            raise ValueError(f"unknown $schema {template.get('$schema')!r}")
        return url[len(SCHEMA_URL) :]

    def validate_template(self, template: dict[str, Any], where: str = "template") -> list[SchemaProblem]:
        """Every problem the schemas find in ``template``, its resources and its inline nested templates."""
        name = self.template_schema_name(template)
        if name not in self.documents:
            return [SchemaProblem(where, f"schema {name} is not in tests/deploy/arm_schemas")]
        document = copy.deepcopy(self.documents[name])
        # Resources are checked one by one below, against their own definitions: the template schema's list of
        # every resource type refers to a file that is not copied (autogeneratedResources.json).
        document["properties"]["resources"] = {"type": "array", "items": {"type": "object"}}
        problems = self._problems(self._validator(document, name), template, where)
        subscription_scope = "subscription" in name.lower()
        for index, resource in enumerate(template.get("resources", [])):
            problems += self.validate_resource(resource, subscription_scope, f"{where}/resources/{index}")
        return problems

    def validate_resource(self, resource: dict[str, Any], subscription_scope: bool, where: str) -> list[SchemaProblem]:
        resource_type, api_version = resource.get("type", ""), resource.get("apiVersion", "")
        where = f"{where} ({resource_type}@{api_version})"
        namespace, _, rest = resource_type.partition("/")
        file_name = f"{api_version}/{SCHEMA_FILES.get(resource_type, namespace)}.json"
        document = self.documents.get(file_name)
        if document is None:
            return [SchemaProblem(where, f"no schema file {file_name} in tests/deploy/arm_schemas")]
        key = rest.replace("/", "_")
        sections = ["subscription_resourceDefinitions", "resourceDefinitions"] if subscription_scope else []
        sections.append("resourceDefinitions")
        definition_path = next((f"{s}/{key}" for s in sections if key in document.get(s, {})), None)
        if definition_path is None:
            return [SchemaProblem(where, f"{file_name} defines no resource type {resource_type}")]

        problems = []
        for template_key in TEMPLATE_ONLY_KEYS & resource.keys():
            if (
                template_key in ("resourceGroup", "subscriptionId")
                and resource_type != "Microsoft.Resources/deployments"
            ):
                problems.append(SchemaProblem(where, f"{template_key!r} only applies to nested deployments"))
        base_name = (
            "2018-05-01/subscriptionDeploymentTemplate.json"
            if subscription_scope
            else "2019-04-01/deploymentTemplate.json"
        )
        definitions = self.documents[base_name]["definitions"]
        envelope_schema = {
            "type": "object",
            "properties": {
                **definitions["ARMResourceBase"]["properties"],
                **definitions["resourceBase"]["allOf"][1]["properties"],
            },
            "definitions": definitions,
        }
        envelope = {k: v for k, v in resource.items() if k in TEMPLATE_ONLY_KEYS - {"resourceGroup", "subscriptionId"}}
        envelope |= {"name": resource.get("name"), "type": resource_type}
        problems += self._problems(self._validator(envelope_schema, base_name), envelope, where)

        body = {k: v for k, v in resource.items() if k not in TEMPLATE_ONLY_KEYS and k != "resources"}
        problems += self._problems(self._definition(file_name, definition_path), body, where)
        for index, child in enumerate(resource.get("resources", [])):
            problems += self._validate_child(child, resource_type, key, f"{where}/resources/{index}")

        nested = resource.get("properties", {}).get("template") if resource_type.endswith("/deployments") else None
        if isinstance(nested, dict):
            problems += self.validate_template(nested, f"{where}/properties/template")
        return problems

    def _definition(self, file_name: str, pointer: str) -> Draft4Validator:
        return Draft4Validator({"$ref": f"{SCHEMA_URL}{file_name}#/{pointer}"}, registry=self.registry)

    def _validate_child(
        self, child: dict[str, Any], parent_type: str, parent_key: str, where: str
    ) -> list[SchemaProblem]:
        """A child resource nested in its parent's ``resources``, against the parent's ``*_childResource`` schema."""
        child_type, api_version = child.get("type", ""), child.get("apiVersion", "")
        where = f"{where} ({parent_type}/{child_type}@{api_version})"
        file_name = f"{api_version}/{parent_type.partition('/')[0]}.json"
        definition = f"{parent_key}_{child_type}_childResource"
        if definition not in self.documents.get(file_name, {}).get("definitions", {}):
            return [SchemaProblem(where, f"no {definition} in {file_name} in tests/deploy/arm_schemas")]
        body = {k: v for k, v in child.items() if k not in TEMPLATE_ONLY_KEYS and k != "resources"}
        problems = self._problems(self._definition(file_name, f"definitions/{definition}"), body, where)
        for index, grandchild in enumerate(child.get("resources", [])):
            problems += self._validate_child(
                grandchild, f"{parent_type}/{child_type}", f"{parent_key}_{child_type}", f"{where}/resources/{index}"
            )
        return problems

    def validate_parameter_file(self, parameters: dict[str, Any], where: str) -> list[SchemaProblem]:
        name = self.template_schema_name(parameters)
        if name not in self.documents:
            return [SchemaProblem(where, f"schema {name} is not in tests/deploy/arm_schemas")]
        return self._problems(self._validator(self.documents[name], name), parameters, where)


# ----------------------------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member:
    target: Node
    key: Node | str


Node = Literal | Call | Member

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][\w]*)|(?P<punct>[(),.\[\]]))"
)


class ExpressionError(ValueError):
    """An expression the parser or the evaluator does not understand."""


def is_expression(text: Any) -> bool:
    return isinstance(text, str) and text.startswith("[") and not text.startswith("[[") and text.endswith("]")


def parse(text: str) -> Node:
    """The syntax tree of an ARM expression string such as ``[parameters('a')]``."""
    if not is_expression(text):
        raise ExpressionError(f"not an expression: {text!r}")
    tokens: list[tuple[str, str]] = []
    source, position = text[1:-1], 0
    while position < len(source.rstrip()):
        match = _TOKEN.match(source, position)
        if match is None:
            raise ExpressionError(f"cannot read {source[position:]!r} in {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    node, rest = _parse_node(tokens, text)
    if rest:
        raise ExpressionError(f"unexpected {rest[0][1]!r} in {text!r}")
    return node


def _parse_node(tokens: list[tuple[str, str]], text: str) -> tuple[Node, list[tuple[str, str]]]:
    if not tokens:
        raise ExpressionError(f"unexpected end of {text!r}")
    (kind, value), rest = tokens[0], tokens[1:]
    node: Node
    if kind == "string":
        node = Literal(value[1:-1].replace("''", "'"))
    elif kind == "number":
        node = Literal(int(value))
    elif kind == "name":
        if not rest or rest[0] != ("punct", "("):
            raise ExpressionError(f"{value!r} is not called in {text!r}")
        rest = rest[1:]
        args: list[Node] = []
        while rest and rest[0] != ("punct", ")"):
            arg, rest = _parse_node(rest, text)
            args.append(arg)
            if rest and rest[0] == ("punct", ","):
                rest = rest[1:]
            elif not rest or rest[0] != ("punct", ")"):
                raise ExpressionError(f"expected ',' or ')' after an argument of {value}() in {text!r}")
        if not rest:
            raise ExpressionError(f"unclosed {value}( in {text!r}")
        node, rest = Call(value, tuple(args)), rest[1:]
    else:
        raise ExpressionError(f"unexpected {value!r} in {text!r}")
    while rest and rest[0] in (("punct", "."), ("punct", "[")):
        if rest[0][1] == ".":
            if len(rest) < 2 or rest[1][0] != "name":
                raise ExpressionError(f"expected a property name after '.' in {text!r}")
            node, rest = Member(node, rest[1][1]), rest[2:]
        else:
            key, rest = _parse_node(rest[1:], text)
            if not rest or rest[0] != ("punct", "]"):
                raise ExpressionError(f"unclosed '[' in {text!r}")
            node, rest = Member(node, key), rest[1:]
    return node, rest


def walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Call):
        for arg in node.args:
            yield from walk(arg)
    elif isinstance(node, Member):
        yield from walk(node.target)
        if not isinstance(node.key, str):
            yield from walk(node.key)


def expressions(value: Any, skip_nested_templates: bool = True) -> Iterator[tuple[str, str]]:
    """Every expression string in ``value`` (keys included) with a JSON path. Inline templates of nested
    deployments with inner scope are their own scope and are skipped unless ``skip_nested_templates`` is False."""

    def visit(item: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(item, dict):
            inner = str(item.get("expressionEvaluationOptions", {}).get("scope", "")).lower() == "inner"
            for key, child in item.items():
                if is_expression(key):
                    yield path, key
                if key == "template" and inner and skip_nested_templates:
                    continue
                yield from visit(child, f"{path}/{key}")
        elif isinstance(item, list):
            for index, child in enumerate(item):
                yield from visit(child, f"{path}/{index}")
        elif is_expression(item):
            yield path, item

    return visit(value, "")


def referenced(template: dict[str, Any], function: str) -> set[str]:
    """Names passed to ``parameters()`` or ``variables()`` anywhere in ``template``'s own scope."""
    names = set()
    for _, text in expressions(template):
        for node in walk(parse(text)):
            if isinstance(node, Call) and node.name == function:
                if len(node.args) != 1 or not isinstance(node.args[0], Literal):
                    raise ExpressionError(f"{function}() with a computed name in {text!r}")
                names.add(node.args[0].value)
    return names


@dataclass
class Azure:
    """What Azure would answer for a deployment; a stub, because Azure cannot be reached from the tests."""

    subscription_id: str = "00000000-1111-2222-3333-444444444444"
    tenant_id: str = "99999999-8888-7777-6666-555555555555"
    resource_group: str = "rg-state-bot"
    location: str = "westeurope"
    storage_suffix: str = "core.windows.net"
    reference: Callable[[str], dict[str, Any]] = lambda resource_id: {}


def _unique_string(*parts: str) -> str:
    # Azure's uniqueString is a 13-character base-32 hash; the exact algorithm does not matter here, its shape does.
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[byte % 32] for byte in digest[:13])


class Evaluator:
    """Evaluates a template's expressions for given parameter values (defaults filled in as ARM does)."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any], azure: Azure | None = None) -> None:
        self.template = template
        self.azure = azure or Azure()
        unknown = set(parameters) - set(template.get("parameters", {}))
        if unknown:
            raise ExpressionError(f"undeclared parameters given: {sorted(unknown)}")
        self.given = dict(parameters)
        self._parameters: dict[str, Any] = {}
        self._variables: dict[str, Any] = {}

    def parameter(self, name: str) -> Any:
        if name not in self._parameters:
            declaration = self.template["parameters"][name]
            if name in self.given:
                value = self.given[name]
            elif "defaultValue" in declaration:
                value = self.value(declaration["defaultValue"])
            else:
                raise ExpressionError(f"parameter {name!r} has no value and no default")
            allowed = declaration.get("allowedValues")
            if allowed is not None and value not in allowed:
                raise ExpressionError(f"parameter {name!r}={value!r} is not one of {allowed}")
            self._parameters[name] = value
        return self._parameters[name]

    def variable(self, name: str) -> Any:
        if name not in self._variables:
            self._variables[name] = self.value(self.template["variables"][name])
        return self._variables[name]

    def value(self, item: Any) -> Any:
        """``item`` with every expression in it (keys too) evaluated; an inner-scope nested template is left as it
        is (it is evaluated in its own deployment)."""
        if isinstance(item, dict):
            inner = str(item.get("expressionEvaluationOptions", {}).get("scope", "")).lower() == "inner"
            return {
                self.value(key): child if key == "template" and inner else self.value(child)
                for key, child in item.items()
            }
        if isinstance(item, list):
            return [self.value(child) for child in item]
        if is_expression(item):
            return self.evaluate(parse(item))
        if isinstance(item, str) and item.startswith("[["):
            return item[1:]
        return item

    def resource_id(self, resource_type: str, *names: str, scope: str | None = None) -> str:
        namespace, *types = resource_type.split("/")
        if len(types) != len(names):
            raise ExpressionError(f"resourceId({resource_type!r}) needs {len(types)} names, got {names}")
        path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
        if scope is None:
            scope = f"/subscriptions/{self.azure.subscription_id}/resourceGroups/{self.azure.resource_group}"
        return f"{scope}/providers/{namespace}/{path}"

    def evaluate(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Member):
            target = self.evaluate(node.target)
            key = node.key if isinstance(node.key, str) else self.evaluate(node.key)
            try:
                return target[key]
            except (KeyError, IndexError, TypeError) as err:
                raise ExpressionError(f"no {key!r} in {target!r}") from err
        name, args = node.name, node.args
        if name == "if":
            condition = self.evaluate(args[0])
            if not isinstance(condition, bool):
                raise ExpressionError(f"if() condition is not a bool: {condition!r}")
            return self.evaluate(args[1] if condition else args[2])
        values = [self.evaluate(arg) for arg in args]
        azure = self.azure
        match name:
            case "parameters":
                return self.parameter(values[0])
            case "variables":
                return self.variable(values[0])
            case "equals":
                return values[0] == values[1]
            case "and":
                return all(values)
            case "or":
                return any(values)
            case "not":
                return not values[0]
            case "string":
                return values[0] if isinstance(values[0], str) else json.dumps(values[0])
            case "concat":
                if all(isinstance(v, list) for v in values):
                    return [item for v in values for item in v]
                return "".join(str(v) for v in values)
            case "format":
                return re.sub(r"\{(\d+)\}", lambda m: str(values[1 + int(m.group(1))]), values[0])
            case "uniqueString":
                return _unique_string(*values)
            case "guid":
                return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(values)))
            case "resourceId":
                return self.resource_id(values[0], *values[1:])
            case "subscriptionResourceId":
                return self.resource_id(values[0], *values[1:], scope=f"/subscriptions/{azure.subscription_id}")
            case "reference":
                return azure.reference(values[0])
            case "resourceGroup":
                return {
                    "id": f"/subscriptions/{azure.subscription_id}/resourceGroups/{azure.resource_group}",
                    "name": azure.resource_group,
                    "location": azure.location,
                }
            case "subscription":
                return {
                    "id": f"/subscriptions/{azure.subscription_id}",
                    "subscriptionId": azure.subscription_id,
                    "tenantId": azure.tenant_id,
                }
            case "deployment":
                return {"name": "test-deployment", "location": azure.location}
            case "environment":
                return {"name": "AzureCloud", "suffixes": {"storage": azure.storage_suffix}}
        raise ExpressionError(f"the test evaluator does not know {name}()")


@cache
def template(name: str) -> dict[str, Any]:
    """A template from ``deploymentTemplates/`` (cached: treat it as read-only, copy before changing it)."""
    return load_json(TEMPLATES / name)
