from connectors.attestations.connector import AttestationsConnector

__all__ = ["AttestationsConnector"]
