"""AWS sessions and endpoints, shared by the AWS connector (reading an account) and by
publishing (writing a bundle to S3): boto3's standard credential chain, an assumed role, and the
endpoint rules both follow."""
