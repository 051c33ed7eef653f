from connectors.replay.connector import ReplayConnector

__all__ = ["ReplayConnector"]
