"""The DRA driver's names; they live in :mod:`krakenplug.resource_names`, shared with the exporter."""

from krakenplug.resource_names import DOMAIN, dns_label, driver_name, slice_name

__all__ = ["DOMAIN", "dns_label", "driver_name", "slice_name"]
