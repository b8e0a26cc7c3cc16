"""The ``openstack function …`` commands: a python-openstackclient plugin.

Registered through the ``openstack.cli.extension`` and ``openstack.function.v1``
entry points (setup.cfg), as Qinling's client did, so a user with an openrc or a
clouds.yaml runs ``openstack function list`` against the platform's API with their
own Keystone token. ``plugin`` is what the OpenStack client loads; ``v1`` holds the
commands.
"""
