"""The AWS connector: boto3, read calls only."""
