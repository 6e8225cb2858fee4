"""The metering mappings of the Azure OpenAI accounts behind the gateway, from main.bicep's output
METERING_BACKENDS (backend_id = account name, its ARM id and region) and each account's own
deployment list (`az cognitiveservices account deployment list`): writes backends.csv,
deployments.csv and regions.txt (the regions whose retail prices the hook imports) to --output.
Nothing is typed twice: the account names are the one list in METERING_OPENAI_BACKENDS."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

# Azure OpenAI deployment SKU → the metering deployment_type (DESIGN: rates CSV, deployment_type).
SKU_TYPES = {
    "globalstandard": "global",
    "datazonestandard": "datazone",
    "standard": "regional",
    "globalbatch": "global-batch",
    "datazonebatch": "datazone-batch",
    "provisionedmanaged": "provisioned",
    "globalprovisionedmanaged": "provisioned",
    "datazoneprovisionedmanaged": "provisioned",
}


def deployment_rows(backend_id: str, deployments: list[dict]) -> list[dict[str, str]]:
    """deployments.csv rows for one account from its deployment list (az's JSON); a SKU this table
    does not know is left out with a message (its requests are then priced by the card's default)."""
    rows = []
    for deployment in deployments:
        sku = str((deployment.get("sku") or {}).get("name", "")).lower()
        model = ((deployment.get("properties") or {}).get("model") or {}).get("name", "")
        if sku not in SKU_TYPES or not model:
            print(f"mappings: {backend_id}/{deployment.get('name')}: SKU {sku or '?'} not mapped; left out", file=sys.stderr)
            continue
        rows.append({"backend_id": backend_id, "deployment": deployment["name"], "model": model,
                     "deployment_type": SKU_TYPES[sku]})
    return rows


def list_deployments(resource_id: str) -> list[dict]:
    parts = resource_id.split("/")
    group, name = parts[parts.index("resourceGroups") + 1], parts[-1]
    result = subprocess.run(["az", "cognitiveservices", "account", "deployment", "list", "-g", group, "-n", name,
                             "-o", "json"], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends-json", required=True, help="main.bicep output METERING_BACKENDS")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--location", default="", help="region for the rate card when there is no backend")
    args = parser.parse_args(argv)
    backends = json.loads(args.backends_json or "[]")
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "backends.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, ["backend_id", "resource_id", "region"])
        writer.writeheader()
        writer.writerows({k: b[k] for k in ("backend_id", "resource_id", "region")} for b in backends)
    rows = [row for b in backends for row in deployment_rows(b["backend_id"], list_deployments(b["resource_id"]))]
    with (args.output / "deployments.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, ["backend_id", "deployment", "model", "deployment_type"])
        writer.writeheader()
        writer.writerows(rows)
    regions = sorted({b["region"].replace(" ", "").lower() for b in backends} or ({args.location} - {""}))
    (args.output / "regions.txt").write_text("".join(f"{r}\n" for r in regions))
    print(f"mappings: {len(backends)} backend(s), {len(rows)} deployment(s), regions {', '.join(regions) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
