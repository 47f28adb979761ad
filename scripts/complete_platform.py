"""A Pex complete platform (JSON on stdout) for an EMR 7.1+ node: CPython 3.11 on glibc 2.28
or newer (Amazon Linux 2023 has 2.34), ``x86_64`` or ``aarch64``.

An abbreviated ``--platform manylinux_2_28_x86_64-cp-3.11.2-cp311`` accepts only wheels tagged
exactly manylinux_2_28, so a dependency that ships manylinux2014 (glibc 2.17) wheels only, as
awscrt does, is not found, and Pex's pip falls back to compiling the source for the builder's
machine. A complete platform lists every tag such a node accepts, as its interpreter would."""

import json
import sys

from packaging import tags

GLIBC_MINOR = 28  # the oldest glibc the artifact promises (manylinux_2_28)
PYTHON = (3, 11, 2)


def platform(arch: str) -> dict:
    plats = [f"manylinux_2_{m}_{arch}" for m in range(GLIBC_MINOR, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for minor, name in legacy.items():
        plats.insert(plats.index(f"manylinux_2_{minor}_{arch}") + 1, f"{name}_{arch}")
    plats.append(f"linux_{arch}")
    version = PYTHON[:2]
    compatible = [
        *tags.cpython_tags(version, abis=[f"cp{version[0]}{version[1]}"], platforms=plats),
        *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", plats),
    ]
    full = ".".join(map(str, PYTHON))
    return {
        "marker_environment": {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": f"{version[0]}.{version[1]}",
            "sys_platform": "linux",
        },
        "compatible_tags": [str(t) for t in compatible],
    }


if __name__ == "__main__":
    print(json.dumps(platform(sys.argv[1]), indent=1))
