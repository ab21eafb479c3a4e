"""The Azure deployment templates (``deploymentTemplates/``), checked offline.

Azure itself cannot be reached from here: the schemas are the official ARM JSON schemas (a copy, see
``tests/deploy/arm_schemas/README.md``), checkov runs with its bundled checks only, and what a deployment would compute
is worked out by ``tests.deploy.arm.Evaluator`` with a stub (``Azure``) for the values only Azure knows (a created
identity's client id, the web app's host name).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from config import STORAGE_BACKENDS, ConfigError, load_settings
from deploymentTemplates.generate import expected_text
from hosting.storage.registry import BlobSettings, CosmosSettings, TableSettings
from tests.deploy.arm import (
    TEMPLATES,
    ArmSchemas,
    Azure,
    Evaluator,
    expressions,
    load_json,
    parse,
    referenced,
    template,
)
from tests.support.processes import ROOT, free_port

GROUP = "existing-resource-group.json"
NEW_GROUP = "new-resource-group.json"
TEMPLATE_NAMES = (GROUP, NEW_GROUP)
PARAMETER_FILES = {
    "existing-resource-group.parameters.example.json": GROUP,
    "new-resource-group.parameters.example.json": NEW_GROUP,
}

# The Python versions CI tests, read from .ci/run's loop. The template may offer only these: App Service would
# otherwise run the bot on a Python nobody tested.
_CI_LOOP = re.search(r"^for version in ([\d. ]+); do$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
CI_PYTHON_VERSIONS = tuple(_CI_LOOP.group(1).split()) if _CI_LOOP else ()

# Settings the platform reads rather than config.py: azure-identity picks the user-assigned identity by its client
# id; Oryx (the App Service build) runs `pip install -r requirements.txt` when SCM_DO_BUILD_DURING_DEPLOYMENT is
# true. WEBSITE_* and SCM_* are App Service's own namespace.
PLATFORM_SETTINGS = frozenset({"AZURE_CLIENT_ID", "SCM_DO_BUILD_DURING_DEPLOYMENT"})
PLATFORM_PREFIXES = ("WEBSITE_", "SCM_")

ROLE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
ROLE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"

#: What the templates offer: Azure refuses to create a multi-tenant Azure Bot since 2025-07-31.
APP_TYPES = ("UserAssignedMSI", "SingleTenant")
STORES = ("blob", "table", "cosmos", "sqlite")


@pytest.fixture(scope="module")
def schemas() -> ArmSchemas:
    return ArmSchemas(strict=True)


def resources(tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    return tmpl["resources"]


def resource(tmpl: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (found,) = [r for r in tmpl["resources"] if r["type"] == resource_type]
    return found


def site(tmpl: dict[str, Any]) -> dict[str, Any]:
    return resource(tmpl, "Microsoft.Web/sites")


def nested_template(tmpl: dict[str, Any]) -> dict[str, Any]:
    return resource(tmpl, "Microsoft.Resources/deployments")["properties"]["template"]


def scopes() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each template scope: both files, and the inline template nested in the new-group one."""
    yield GROUP, template(GROUP)
    yield NEW_GROUP, template(NEW_GROUP)
    yield f"{NEW_GROUP} (nested)", nested_template(template(NEW_GROUP))


# ------------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_the_template_matches_the_arm_schemas_strictly(schemas: ArmSchemas, name: str) -> None:
    problems = schemas.validate_template(template(name), name)

    assert not problems, "\n".join(map(str, problems))


MISSPELLINGS = {
    "site property": lambda t: site(t)["properties"].update(httpsOnyl=True),
    "siteConfig property": lambda t: site(t)["properties"]["siteConfig"].update(alwaysOnn=True),
    "app setting field": lambda t: site(t)["properties"]["siteConfig"]["appSettings"][0].update(nmae="x"),
    "child resource property": lambda t: site(t)["resources"][0]["properties"].update(alow=False),
    "storage account property": lambda t: resource(t, "Microsoft.Storage/storageAccounts")["properties"].update(
        allowBlobPublicAcess=False
    ),
    "cosmos partition key": lambda t: resource(t, "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers")[
        "properties"
    ]["resource"]["partitionKey"].update(pathz=["/id"]),
    "bot property": lambda t: resource(t, "Microsoft.BotService/botServices")["properties"].update(endpoit="x"),
    "role assignment property": lambda t: resource(t, "Microsoft.Authorization/roleAssignments")["properties"].update(
        principalTyp="ServicePrincipal"
    ),
    "parameter declaration": lambda t: t["parameters"]["botSku"].update(defaultvalue="F0"),
    "output": lambda t: t["outputs"]["botName"].update(vaule="x"),
}


@pytest.mark.parametrize("where", MISSPELLINGS)
def test_strict_mode_refuses_a_misspelled_property_name(schemas: ArmSchemas, where: str) -> None:
    """The plain schemas leave most objects open, so a typo would pass them; the strict check must not."""
    broken = copy.deepcopy(template(GROUP))
    MISSPELLINGS[where](broken)

    problems = schemas.validate_template(broken, GROUP)

    assert len(problems) == 1, problems
    assert "Additional properties are not allowed" in problems[0].message


def test_the_plain_schemas_would_let_a_misspelled_property_through() -> None:
    """Why the strict mode exists (and proof that the mutation above is a typo, not an invalid value)."""
    broken = copy.deepcopy(template(GROUP))
    site(broken)["properties"]["siteConfig"]["alwaysOnn"] = True

    assert ArmSchemas(strict=False).validate_template(broken, GROUP) == []


def test_a_resource_on_an_api_version_without_a_copied_schema_is_refused(schemas: ArmSchemas) -> None:
    broken = copy.deepcopy(template(GROUP))
    site(broken)["apiVersion"] = "2099-01-01"

    problems = schemas.validate_template(broken, GROUP)

    assert [p.message for p in problems] == ["no schema file 2099-01-01/Microsoft.Web.json in tests/deploy/arm_schemas"]


def test_a_misspelled_property_in_the_nested_template_is_refused(schemas: ArmSchemas) -> None:
    broken = copy.deepcopy(template(NEW_GROUP))
    site(nested_template(broken))["properties"]["httpsOnyl"] = True

    problems = schemas.validate_template(broken, NEW_GROUP)

    assert len(problems) == 1
    assert "properties/template/resources" in problems[0].where


@pytest.mark.parametrize("name", PARAMETER_FILES)
def test_the_example_parameter_files_are_valid_for_their_template(schemas: ArmSchemas, name: str) -> None:
    values = load_json(TEMPLATES / name)
    declared = template(PARAMETER_FILES[name])["parameters"]

    assert schemas.validate_parameter_file(values, name) == []
    assert set(values["parameters"]) <= set(declared), "a parameter the template does not declare"
    required = {p for p, d in declared.items() if "defaultValue" not in d}
    assert required <= set(values["parameters"]), f"missing required parameters: {required - set(values['parameters'])}"
    for parameter, given in values["parameters"].items():
        allowed = declared[parameter].get("allowedValues")
        assert allowed is None or given["value"] in allowed, parameter
        if declared[parameter]["type"] == "securestring":
            assert given["value"] == "", f"{name} must not carry a secret ({parameter})"


# ---------------------------------------------------------------------------- generation, references, secrets


def test_the_new_group_template_is_generated_from_the_existing_group_one() -> None:
    """One set of parameters and resources: edit existing-resource-group.json, then run generate.py."""
    assert (TEMPLATES / NEW_GROUP).read_text(encoding="utf-8") == expected_text(), (
        "new-resource-group.json is out of date: run python deploymentTemplates/generate.py"
    )
    outer = template(NEW_GROUP)
    assert nested_template(outer) == template(GROUP)
    assert set(outer["parameters"]) == set(template(GROUP)["parameters"]) | {"resourceGroupName"}
    passed = resource(outer, "Microsoft.Resources/deployments")["properties"]["parameters"]
    assert passed == {name: {"value": f"[parameters('{name}')]"} for name in template(GROUP)["parameters"]}


@pytest.mark.parametrize(("name", "tmpl"), list(scopes()), ids=[name for name, _ in scopes()])
def test_every_reference_is_declared_and_every_declaration_used(name: str, tmpl: dict[str, Any]) -> None:
    for _, text in expressions(tmpl):
        parse(text)  # every expression is well-formed (quotes and brackets balanced)
    parameters, variables = set(tmpl.get("parameters", {})), set(tmpl.get("variables", {}))

    assert referenced(tmpl, "parameters") == parameters
    assert referenced(tmpl, "variables") == variables


def test_the_reference_check_sees_an_undeclared_parameter() -> None:
    broken = copy.deepcopy(template(GROUP))
    site(broken)["properties"]["siteConfig"]["appSettings"][0]["value"] = "[parameters('appTyp')]"

    assert "appTyp" in referenced(broken, "parameters") - set(broken["parameters"])


@pytest.mark.parametrize(("name", "tmpl"), list(scopes()), ids=[name for name, _ in scopes()])
def test_secrets_are_securestring_without_a_default(name: str, tmpl: dict[str, Any]) -> None:
    parameters = tmpl["parameters"]
    secret_like = {p for p in parameters if re.search(r"secret|password|key", p, re.IGNORECASE)}
    secure = {p for p, d in parameters.items() if d["type"] in ("securestring", "secureObject")}

    assert secret_like <= secure
    assert secure == {"appSecret"}
    for parameter in secure:
        assert "defaultValue" not in parameters[parameter]
    for output in tmpl.get("outputs", {}).values():
        assert "appSecret" not in json.dumps(output)


# ------------------------------------------------------------------------------------------- the web app


def test_the_web_app_is_hardened_as_the_issue_asks() -> None:
    tmpl = template(GROUP)
    app = site(tmpl)
    properties, config = app["properties"], app["properties"]["siteConfig"]

    assert tmpl["parameters"]["appServicePlanSku"]["defaultValue"] == "B1"
    assert resource(tmpl, "Microsoft.Web/serverfarms")["properties"]["reserved"] is True  # Linux
    assert properties["httpsOnly"] is True
    assert properties["clientAffinityEnabled"] is False
    assert config["alwaysOn"] is True
    assert config["healthCheckPath"] == "/healthz"
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"
    assert config["ftpsState"] == "Disabled"
    assert config["http20Enabled"] is True
    policies = {child["name"]: child["properties"]["allow"] for child in app["resources"]}
    assert policies == {"ftp": False, "scm": False}
    assert app["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"[variables('identityId')]": {}}}


def test_the_startup_command_is_the_one_app_service_can_run() -> None:
    """Oryx wraps the command in single quotes and App Service sets PORT: no quote, the port from $PORT, the
    app factory with the aiohttp worker (the module has no module-level app)."""
    command = site(template(GROUP))["properties"]["siteConfig"]["appCommandLine"]

    assert "'" not in command
    assert command == "gunicorn --bind=0.0.0.0:$PORT --worker-class aiohttp.GunicornWebWorker app:create_app"


def test_the_allowed_python_versions_are_the_ones_ci_tests() -> None:
    """The template may only offer the Pythons CI tests; its default is the one the Makefile builds with."""
    declaration = template(GROUP)["parameters"]["linuxFxVersion"]
    makefile_python = re.search(r"^PYTHON_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)

    assert declaration["allowedValues"] == [f"PYTHON|{version}" for version in CI_PYTHON_VERSIONS]
    assert makefile_python is not None
    assert declaration["defaultValue"] == f"PYTHON|{makefile_python.group(1)}"


# ------------------------------------------------------------------------------------------ app settings


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def names_config_reads(tmp_path: Path) -> set[str]:
    """Every setting name ``config.load_settings`` looks up, whichever store is chosen."""
    asked: set[str] = set()
    for store in STORAGE_BACKENDS:
        environ = RecordingEnviron({"STORAGE": store, "SQLITE_PATH": str(tmp_path / "bot.sqlite3")})
        # Missing store settings are expected here; only the names asked for matter.
        with contextlib.suppress(ConfigError):
            load_settings(environ)
        asked |= environ.asked
    return asked


def app_setting_names(tmpl: dict[str, Any]) -> list[str]:
    return [setting["name"] for setting in site(tmpl)["properties"]["siteConfig"]["appSettings"]]


def test_the_recorded_names_follow_config_py(tmp_path: Path) -> None:
    """The recorder sees what config.py asks for (so a renamed setting shows up as a new, unknown name)."""
    names = names_config_reads(tmp_path)

    assert {"STORAGE", "MicrosoftAppId", "AZURE_STORAGE_ACCOUNT_URL", "COSMOS_ENDPOINT", "LOG_LEVEL"} <= names


def test_every_app_setting_is_one_config_py_or_the_platform_reads(tmp_path: Path) -> None:
    names = app_setting_names(template(GROUP))
    known = names_config_reads(tmp_path) | PLATFORM_SETTINGS

    unknown = [name for name in names if name not in known and not name.startswith(PLATFORM_PREFIXES)]
    assert unknown == []
    assert len(names) == len(set(names)), "an app setting is given twice"
    # The stores are reached with the identity: no key or connection string is ever set.
    assert "COSMOS_KEY" not in names
    assert "AZURE_STORAGE_CONNECTION_STRING" not in names


IDENTITY_CLIENT_ID = "c1c1c1c1-0000-4000-8000-000000000001"
IDENTITY_PRINCIPAL_ID = "p1p1p1p1-0000-4000-8000-000000000002"
REGISTERED_APP_ID = "a2a2a2a2-0000-4000-8000-000000000003"
SECRET = "not-a-real-secret"
INSIGHTS_CONNECTION_STRING = (
    "InstrumentationKey=i3i3i3i3-0000-4000-8000-000000000004;"
    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
    "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"
)


def fake_reference(resource_id: str) -> dict[str, Any]:
    """What ``reference()`` returns for a created resource (Azure cannot run here)."""
    name = resource_id.rsplit("/", 1)[1]
    if "/Microsoft.ManagedIdentity/userAssignedIdentities/" in resource_id:
        return {"clientId": IDENTITY_CLIENT_ID, "principalId": IDENTITY_PRINCIPAL_ID}
    if "/Microsoft.Web/sites/" in resource_id:
        # Newer web apps get a regional host name that cannot be guessed from the app's name.
        return {"defaultHostName": f"{name}-h3b2a1c0d9e8f7g6.westeurope-01.azurewebsites.net"}
    if "/Microsoft.DocumentDB/databaseAccounts/" in resource_id:
        return {"documentEndpoint": f"https://{name}.documents.azure.com:443/"}
    if "/Microsoft.Insights/components/" in resource_id:
        return {"ConnectionString": INSIGHTS_CONNECTION_STRING}
    raise AssertionError(f"the template asks for an unexpected reference({resource_id!r})")


def user_parameters(store: str, app_type: str) -> dict[str, Any]:
    parameters: dict[str, Any] = {"botName": "state-bot-test", "storage": store, "appType": app_type}
    if app_type == "UserAssignedMSI":
        parameters["appSecret"] = ""
    else:
        parameters |= {"appId": REGISTERED_APP_ID, "appSecret": SECRET}
    return parameters


def deployed(tmpl: dict[str, Any], parameters: dict[str, Any]) -> Evaluator:
    return Evaluator(tmpl, parameters, Azure(reference=fake_reference))


def app_settings(evaluator: Evaluator) -> dict[str, str]:
    values = evaluator.value(site(evaluator.template)["properties"]["siteConfig"]["appSettings"])
    assert all(isinstance(setting["value"], str) for setting in values), values
    return {setting["name"]: setting["value"] for setting in values}


def deployed_resources(evaluator: Evaluator) -> dict[str, dict[str, Any]]:
    """The resources a deployment would create (conditions evaluated), by type."""
    chosen: dict[str, dict[str, Any]] = {}
    for item in resources(evaluator.template):
        if evaluator.value(item.get("condition", True)):
            assert item["type"] not in chosen
            chosen[item["type"]] = item
    return chosen


@pytest.mark.parametrize("app_type", APP_TYPES)
@pytest.mark.parametrize("store", STORES)
def test_the_app_settings_give_config_py_a_working_configuration(store: str, app_type: str, tmp_path: Path) -> None:
    """For every store and app type, the deployed app settings load (config.load_settings) into the settings the
    resources the template creates need: the store's URL and identity, the bot's identity."""
    evaluator = deployed(template(GROUP), user_parameters(store, app_type))
    settings_env = app_settings(evaluator)
    assert settings_env["SQLITE_PATH"].startswith("/home/"), "only /home survives restarts on App Service"
    # The App Service path cannot be created here; everything else is loaded as App Service would.
    settings = load_settings({**settings_env, "SQLITE_PATH": str(tmp_path / "bot.sqlite3")})
    account = evaluator.parameter("storageAccountName")

    assert settings.storage == store
    assert settings_env["SCM_DO_BUILD_DURING_DEPLOYMENT"] == "true"
    assert settings.web_concurrency == 2
    assert settings.log_level == "INFO"
    assert settings_env["AZURE_CLIENT_ID"] == IDENTITY_CLIENT_ID
    # Each store whole, with its defaults: reached with the identity, so no connection string and no key.
    if store == "blob":
        assert settings.store == BlobSettings(account_url=f"https://{account}.blob.core.windows.net")
    elif store == "table":
        assert settings.store == TableSettings(account_url=f"https://{account}.table.core.windows.net")
    elif store == "cosmos":
        endpoint = f"https://{evaluator.parameter('cosmosAccountName')}.documents.azure.com:443/"
        assert settings.store == CosmosSettings(endpoint=endpoint)

    assert settings.app_type == app_type
    if app_type == "UserAssignedMSI":
        assert (settings.app_id, settings.app_password) == (IDENTITY_CLIENT_ID, "")
    else:
        assert (settings.app_id, settings.app_password) == (REGISTERED_APP_ID, SECRET)
    assert settings.app_tenant_id == Azure().tenant_id


@pytest.mark.parametrize("telemetry", [True, False], ids=["telemetry", "no telemetry"])
def test_telemetry_goes_to_an_application_insights_component_on_a_workspace_the_template_creates(
    telemetry: bool, tmp_path: Path
) -> None:
    """On by default: a Log Analytics workspace, a workspace-based Application Insights component, and its
    connection string in the app's settings, which config.py accepts. ``telemetry=false`` creates neither and
    leaves the setting empty (no telemetry)."""
    evaluator = deployed(template(GROUP), {**user_parameters("blob", "UserAssignedMSI"), "telemetry": telemetry})
    created = deployed_resources(evaluator)
    settings = load_settings({**app_settings(evaluator), "SQLITE_PATH": str(tmp_path / "bot.sqlite3")})

    if not telemetry:
        assert not {"Microsoft.OperationalInsights/workspaces", "Microsoft.Insights/components"} & created.keys()
        assert settings.applicationinsights_connection_string == ""
        return
    workspace = evaluator.value(created["Microsoft.OperationalInsights/workspaces"])
    component = evaluator.value(created["Microsoft.Insights/components"])
    assert workspace["properties"]["sku"] == {"name": "PerGB2018"}
    assert workspace["properties"]["retentionInDays"] == 30
    assert component["properties"]["Application_Type"] == "web"
    assert component["properties"]["WorkspaceResourceId"].endswith(
        f"/Microsoft.OperationalInsights/workspaces/{workspace['name']}"
    )
    assert evaluator.value(site(evaluator.template)["dependsOn"])[-1].endswith(f"/components/{component['name']}")
    assert settings.applicationinsights_connection_string == INSIGHTS_CONNECTION_STRING


@pytest.mark.parametrize("name", [GROUP, NEW_GROUP])
def test_the_templates_offer_no_multi_tenant_bot_and_default_to_the_managed_identity(name: str) -> None:
    declared = template(name)["parameters"]["appType"]

    assert declared["allowedValues"] == list(APP_TYPES)
    assert declared["defaultValue"] == "UserAssignedMSI"


@pytest.mark.parametrize("app_type", APP_TYPES)
def test_the_azure_bot_talks_to_this_web_app_as_the_app_signs_in(app_type: str) -> None:
    evaluator = deployed(template(GROUP), user_parameters("blob", app_type))
    bot = evaluator.value(resource(template(GROUP), "Microsoft.BotService/botServices"))
    settings_env = app_settings(evaluator)
    host = fake_reference(evaluator.variable("siteId"))["defaultHostName"]

    assert (bot["kind"], bot["location"], bot["sku"]["name"]) == ("azurebot", "global", "F0")
    assert bot["properties"]["endpoint"] == f"https://{host}/api/messages"
    assert bot["properties"]["msaAppType"] == settings_env["MicrosoftAppType"] == app_type
    assert bot["properties"]["msaAppId"] == settings_env["MicrosoftAppId"]
    assert bot["properties"]["msaAppTenantId"] == settings_env["MicrosoftAppTenantId"]
    if app_type == "UserAssignedMSI":
        assert bot["properties"]["msaAppMSIResourceId"] == evaluator.variable("identityId")
    outputs = evaluator.value(template(GROUP)["outputs"])
    assert outputs["messagingEndpoint"]["value"] == f"https://{host}/api/messages"
    assert outputs["webAppName"]["value"] == "state-bot-test"


@pytest.mark.parametrize("store", STORES)
def test_only_the_chosen_store_is_created_with_access_for_the_identity(store: str) -> None:
    evaluator = deployed(template(GROUP), user_parameters(store, "UserAssignedMSI"))
    created = deployed_resources(evaluator)
    store_types = {t for t in created if t.startswith(("Microsoft.Storage", "Microsoft.DocumentDB", "Microsoft.Auth"))}

    if store in ("blob", "table"):
        child = {"blob": "blobServices/containers", "table": "tableServices/tables"}[store]
        assert store_types == {
            "Microsoft.Storage/storageAccounts",
            f"Microsoft.Storage/storageAccounts/{child}",
            "Microsoft.Authorization/roleAssignments",
        }
        account = evaluator.value(created["Microsoft.Storage/storageAccounts"])
        assert account["kind"] == "StorageV2"
        assert account["properties"]["minimumTlsVersion"] == "TLS1_2"
        assert account["properties"]["allowBlobPublicAccess"] is False
        assert account["properties"]["allowSharedKeyAccess"] is False
        role = evaluator.value(created["Microsoft.Authorization/roleAssignments"])
        role_id = {"blob": ROLE_BLOB_DATA_CONTRIBUTOR, "table": ROLE_TABLE_DATA_CONTRIBUTOR}[store]
        assert role["properties"]["roleDefinitionId"].endswith(f"/roleDefinitions/{role_id}")
        assert role["properties"]["principalId"] == IDENTITY_PRINCIPAL_ID
        assert role["scope"] == f"Microsoft.Storage/storageAccounts/{evaluator.parameter('storageAccountName')}"
        container = evaluator.value(created[f"Microsoft.Storage/storageAccounts/{child}"])
        expected_name = {"blob": "bot-state", "table": "BotState"}[store]
        assert container["name"] == f"{evaluator.parameter('storageAccountName')}/default/{expected_name}"
    elif store == "cosmos":
        assert store_types == {
            "Microsoft.DocumentDB/databaseAccounts",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
            "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
        }
        account = evaluator.value(created["Microsoft.DocumentDB/databaseAccounts"])
        assert account["properties"]["capabilities"] == [{"name": "EnableServerless"}]
        assert account["properties"]["disableLocalAuth"] is True
        container = evaluator.value(created["Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"])
        assert container["properties"]["resource"]["partitionKey"]["paths"] == ["/id"]
        assert container["properties"]["resource"]["defaultTtl"] == -1  # TTL on, records kept until deleted
        role = evaluator.value(created["Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"])
        assert role["properties"]["roleDefinitionId"].endswith(f"/sqlRoleDefinitions/{COSMOS_DATA_CONTRIBUTOR}")
        assert role["properties"]["principalId"] == IDENTITY_PRINCIPAL_ID
        # Account scope: the SDK reads the account's metadata (regions) before any database call.
        assert role["properties"]["scope"] == evaluator.variable("cosmosAccountId")
    else:
        assert store_types == set()

    outputs = {
        name for name, output in template(GROUP)["outputs"].items() if evaluator.value(output.get("condition", True))
    }
    warning = evaluator.value(template(GROUP)["outputs"]["storageWarning"]["value"])
    assert ("storageWarning" in outputs) == (store == "sqlite")
    assert "single-instance" in warning
    assert "/home/" in warning


@pytest.mark.parametrize("store", STORES)
def test_the_new_group_template_deploys_what_the_existing_group_one_does(store: str) -> None:
    """Same user parameters, same app settings and resource names, whichever template creates them."""
    azure = Azure(reference=fake_reference)
    parameters = user_parameters(store, "UserAssignedMSI")
    outer = Evaluator(template(NEW_GROUP), {**parameters, "resourceGroupName": azure.resource_group}, azure)
    deployment = outer.value(resource(template(NEW_GROUP), "Microsoft.Resources/deployments"))
    passed = {name: given["value"] for name, given in deployment["properties"]["parameters"].items()}

    via_new_group = Evaluator(nested_template(template(NEW_GROUP)), passed, azure)
    direct = Evaluator(template(GROUP), parameters, azure)

    assert deployment["resourceGroup"] == azure.resource_group
    assert passed["location"] == azure.location
    assert app_settings(via_new_group) == app_settings(direct)
    for name in ("storageAccountName", "cosmosAccountName", "webAppName", "appServicePlanName"):
        assert via_new_group.parameter(name) == direct.parameter(name)


# ------------------------------------------------------------------------------------------------ checkov

CHECKOV = Path(sys.prefix) / "checkov" / "bin" / "checkov"  # the Makefile builds it inside each test venv

# Checks that must pass (checkov 3.3.30's ids): what the web app, the store and Cosmos DB must be.
MUST_PASS = {
    "CKV_AZURE_14": "HTTPS only",
    "CKV_AZURE_15": "TLS 1.2 minimum",
    "CKV_AZURE_16": "a managed identity on the app",
    "CKV_AZURE_18": "HTTP/2",
    "CKV_AZURE_71": "managed identity provider enabled",
    "CKV_AZURE_72": "no remote debugging",
    "CKV_AZURE_78": "FTP(S) deployments disabled",
    "CKV_AZURE_213": "a health check",
    "CKV_AZURE_3": "storage: HTTPS traffic only",
    "CKV_AZURE_44": "storage: TLS 1.2 minimum",
    "CKV_AZURE_34": "blob container: no public access",
    "CKV_AZURE_36": "storage: trusted Azure services may pass the network rules",
    "CKV_AZURE_132": "Cosmos DB: no key-based metadata writes",
    "CKV_AZURE_140": "Cosmos DB: local (key) authentication disabled",
}

# Checks skipped, each for a reason.
SKIPPED = {
    # The Bot Framework channel service calls the bot from the internet: the app must be publicly reachable.
    # Requests are authenticated by the Bot Framework's signed JWT, not by network location.
    "CKV_AZURE_222": "web app public network access",
    # The channel service does not present client certificates; its JWT is the authentication.
    "CKV_AZURE_17": "web app client certificates",
    # Zone redundancy needs Premium v3 with 3+ instances; the default B1 plan cannot have it (a parameter raises the
    # SKU; zone redundancy is a deliberate cost decision left to the user).
    "CKV_AZURE_225": "App Service plan zone redundancy",
    # One instance by default (and sqlite must stay on one); scaling out is the user's choice on the plan.
    "CKV_AZURE_212": "minimum instance count for failover",
    # The web app is not VNet-integrated (no VNet in this starter), so it reaches the store over the public
    # endpoint; access needs Entra ID (shared keys are off), and the data role is granted to one identity.
    "CKV_AZURE_59": "storage public network access",
    "CKV_AZURE_35": "storage default network rule deny",
    "CKV_AZURE_101": "Cosmos DB public network access",
    "CKV_AZURE_99": "Cosmos DB IP / VNet restrictions",
    # Locally redundant (3 copies in one datacenter) is the cheapest; ZRS/GRS are not offered in every region.
    "CKV_AZURE_206": "storage replication beyond LRS",
    # The name is uniqueString()-derived ('st' + 13 lowercase letters and digits, valid by construction);
    # checkov cannot evaluate the expression and reports it as a naming violation.
    "CKV_AZURE_43": "storage account naming rules",
}


def run_checkov(path: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        message = f"{CHECKOV} is missing: run `make test`, which installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # checkov runs offline (--skip-download, no update check); a proxy on a closed loopback port makes sure.
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "HTTPS_PROXY": dead_proxy,
        "HTTP_PROXY": dead_proxy,
        "NO_PROXY": "",
    }
    env.pop("BC_API_KEY", None)
    result = subprocess.run(
        [
            str(CHECKOV),
            "--framework",
            "arm",
            "--skip-download",
            "--output",
            "json",
            "--skip-check",
            ",".join(SKIPPED),
            "--file",
            str(path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert isinstance(report, dict), "checkov found nothing to check"
    return report


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_checkov_passes_with_the_listed_checks(name: str) -> None:
    report = run_checkov(TEMPLATES / name)
    results = report["results"]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for c in results["failed_checks"]]
    passed = {c["check_id"] for c in results["passed_checks"]}

    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert set(MUST_PASS) <= passed, f"not run or not passed: {set(MUST_PASS) - passed}"


def test_checkov_does_fail_a_weakened_template(tmp_path: Path) -> None:
    """The checkov run above can fail: HTTP allowed and FTP on are reported."""
    weakened = copy.deepcopy(template(GROUP))
    site(weakened)["properties"]["httpsOnly"] = False
    site(weakened)["properties"]["siteConfig"]["ftpsState"] = "AllAllowed"
    path = tmp_path / "weakened.json"
    path.write_text(json.dumps(weakened))

    failed = {c["check_id"] for c in run_checkov(path)["results"]["failed_checks"]}

    assert {"CKV_AZURE_14", "CKV_AZURE_78"} <= failed
