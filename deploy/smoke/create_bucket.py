"""Creates a bucket on an S3 endpoint once it answers: create_bucket.py ENDPOINT BUCKET."""
import sys
import time

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="strata", aws_secret_access_key="strata-secret")
for attempt in range(120):
    try:
        s3.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} ready")
        sys.exit(0)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        sys.exit(0)
    except Exception as e:  # the server is still starting
        if attempt % 10 == 0:
            print(f"waiting for {endpoint}: {e}", flush=True)
        time.sleep(0.5)
sys.exit(f"{endpoint} did not answer")
