"""The stage runtime: how a stateful operator runs in a flow.

``stage`` drives a ``BatchLogic`` from an Rx flow of batches and markers, as a
named step whose state rides checkpoint barriers as a ``Snapshot`` (``snapshot``:
the one check on restore) and whose late rows go out as ``SideOutput`` items;
``ThreadBoundary`` is a bounded queue between threads; ``KeyIndex`` gives every
keyed operator its dense per-key slots (and slot tables for state per key and
window); ``EventTimeBuffer`` and ``SensorOrderBuffer`` hold rows until the
watermark releases them.
"""
