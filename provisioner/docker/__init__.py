"""The Docker backend: ``DockerProvisioner`` over the docker SDK.

``host`` is the engine (connection, images, error conversion), ``container`` the
lifecycle of one runtime container, ``channel`` the socket protocol to its agent,
``cache`` the unpacked packages, ``egress`` the network of ``network: true``
functions with ``firewall`` its host rules, and ``provisioner`` ties them to the seam.
"""

from provisioner.docker.provisioner import DockerProvisioner

__all__ = ["DockerProvisioner"]
