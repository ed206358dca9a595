"""Write the manifest of the public HiFi-GAN generators: each config's architecture fields and the
parameter names and shapes of the generator it builds, in the layout of the published checkpoints.

    python scripts/hifigan_manifest.py PATH_TO_HIFI_GAN_CLONE tests/data/hifigan_generators.json

It builds the reference's own `Generator` (models.py of a clone of github.com/jik876/hifi-gan) from its
config_v1.json, config_v2.json and config_v3.json, and records only facts: names and shapes (with the
weight norm as `weight_g`/`weight_v`, as its checkpoints hold it). taco's tests compare the generator taco
builds from the same config fields against this file, so a drift of taco's code from the public layout
fails a test without the reference code or any checkpoint at hand. The reference needs matplotlib (its
utils.py imports it); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


VERSIONS = ("v1", "v2", "v3")
# The config fields that shape the generator; the others in the reference's configs are for training.
ARCHITECTURE_FIELDS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                       "resblock_kernel_sizes", "resblock_dilation_sizes", "num_mels", "sampling_rate", "n_fft",
                       "hop_size", "win_size", "fmin", "fmax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="a clone of github.com/jik876/hifi-gan")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.reference))
    from env import AttrDict  # noqa: PLC0415 (the reference's modules, from its clone)
    from models import Generator  # noqa: PLC0415

    manifest = {}
    for version in VERSIONS:
        config = json.loads((args.reference / f"config_{version}.json").read_text())
        generator = Generator(AttrDict(config))
        manifest[version] = {
            "config": {field: config[field] for field in ARCHITECTURE_FIELDS},
            "parameters": {name: list(tensor.shape) for name, tensor in generator.state_dict().items()},
        }
    # one parameter per line: a diff of the file shows which tensor changed
    lines = ["{"]
    for v, version in enumerate(VERSIONS):
        lines.append(f'  "{version}": {{')
        lines.append(f'    "config": {json.dumps(manifest[version]["config"])},')
        lines.append('    "parameters": {')
        parameters = list(manifest[version]["parameters"].items())
        for p, (name, shape) in enumerate(parameters):
            lines.append(f'      "{name}": {json.dumps(shape)}' + ("," if p < len(parameters) - 1 else ""))
        lines.append("    }")
        lines.append("  }" + ("," if v < len(VERSIONS) - 1 else ""))
    lines.append("}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    total = {version: len(manifest[version]["parameters"]) for version in VERSIONS}
    print(f"{args.output}: tensors per generator {total}")


if __name__ == "__main__":
    main()
