"""HyperSDK exporter service: providers, VM inventory and export workers."""
