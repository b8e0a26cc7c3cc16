"""What python-openstackclient asks of a plugin: its name, options, and a client.

The client is ``lambda_os.client.ApiClient`` on the API's URL with the user's token
from the OpenStack client's own session. The URL is ``--os-function-url`` (or
``OS_FUNCTION_URL``) when given, else the service catalogue's ``function`` endpoint,
which an operator registers with ``openstack endpoint create function public <url>``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from lambda_os.client import ApiClient

API_NAME = "function"
API_VERSION_OPTION = "os_function_api_version"
API_VERSIONS = {"1": "lambda_os.client.ApiClient"}
SERVICE_TYPE = "function"


def make_client(instance: Any) -> ApiClient:
    """An API client with the token of the session the OpenStack client logged in with."""
    url = getattr(instance._cli_options, "os_function_url", None) or os.environ.get(
        "OS_FUNCTION_URL"
    )
    if not url:
        url = instance.get_endpoint_for_service_type(
            SERVICE_TYPE, region_name=instance.region_name, interface=instance.interface
        )
    if not url:
        raise RuntimeError(
            "no function endpoint: pass --os-function-url, set OS_FUNCTION_URL, or register "
            "the API in the service catalogue as service type 'function'"
        )
    instance.setup_auth()
    return ApiClient(url, token=instance.session.get_token())


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--os-function-api-version",
        metavar="<version>",
        default="1",
        help="the platform's API version (only 1)",
    )
    parser.add_argument(
        "--os-function-url",
        metavar="<url>",
        default=None,
        help="the Lambda on OpenStack API, e.g. http://api:8080 (env OS_FUNCTION_URL; "
        "default: the catalogue's 'function' endpoint)",
    )
    return parser
