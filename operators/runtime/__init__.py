"""The stage runtime: how a stateful operator runs in a flow.

``stage`` drives a ``BatchLogic`` from an Rx flow of batches and markers;
``ThreadBoundary`` is a bounded queue between threads; ``KeyIndex`` gives every
keyed operator its dense per-key slots; ``EventTimeBuffer`` and
``SensorOrderBuffer`` hold rows until the watermark releases them.
"""
