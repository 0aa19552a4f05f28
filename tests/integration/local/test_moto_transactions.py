"""DynamoDB transactions on moto as on AWS (moto_fixes.py): a cancelled one leaves the table's
change stream flowing and the items as they were, and none costs the whole table.

moto as released backs every table a transaction names up with a deep copy (items and stream),
and rolls a cancelled TransactWriteItems back by swapping in a deep copy of the
table, stream shard included: the iterators a stream reader holds go on reading the old shard,
and every later change is lost to it (JobEventsFunction's counts, events and webhooks stopped
after the first over-budget claim or the first batch count delivered twice). In-process moto: the
backend is the same as the server's, without the HTTP layer the fix does not need.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from imagejobs_tools.local import moto_fixes

REGION = "us-east-1"


@pytest.fixture
def stream() -> Iterator[tuple[Any, Any, str]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        arn = ddb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        yield ddb, streams, iterator["ShardIterator"]


def changes_after_a_cancelled_transaction(ddb: Any, streams: Any, iterator: str) -> list[str]:
    """The keys of the changes a stream reader sees: a put, a cancelled transaction, a put."""
    ddb.put_item(TableName="t", Item={"k": {"S": "first"}})
    cancelled = {
        "Update": {
            "TableName": "t",
            "Key": {"k": {"S": "first"}},
            "UpdateExpression": "SET v = :v",
            "ConditionExpression": "attribute_not_exists(k)",  # fails: the transaction is cancelled
            "ExpressionAttributeValues": {":v": {"S": "x"}},
        }
    }
    applied_then_rolled_back = {"Put": {"TableName": "t", "Item": {"k": {"S": "phantom"}}}}
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[applied_then_rolled_back, cancelled])
    ddb.put_item(TableName="t", Item={"k": {"S": "second"}})
    keys: list[str] = []
    while iterator:
        page = streams.get_records(ShardIterator=iterator)
        keys += [r["dynamodb"]["Keys"]["k"]["S"] for r in page["Records"]]
        if not page["Records"]:
            break
        iterator = page["NextShardIterator"]
    return keys


def test_moto_as_released_loses_every_change_after_a_cancelled_transaction(
    stream: tuple[Any, Any, str],
) -> None:
    # If this fails, moto rolls back in place now: the fix can go (moto_fixes.py).
    keys = changes_after_a_cancelled_transaction(*stream)
    assert "second" not in keys


def test_with_the_fix_the_stream_goes_on_and_shows_nothing_of_the_cancelled_transaction(
    stream: tuple[Any, Any, str],
) -> None:
    undo = moto_fixes.install()
    try:
        assert changes_after_a_cancelled_transaction(*stream) == ["first", "second"]
    finally:
        undo()


def updated_then_cancelled(ddb: Any) -> dict[str, str]:
    """An update applied, then the transaction cancelled by its last item: each key's value after."""
    ddb.put_item(TableName="t", Item={"k": {"S": "a"}, "v": {"S": "before"}})
    ddb.put_item(TableName="t", Item={"k": {"S": "b"}, "v": {"S": "untouched"}})
    update = {
        "TableName": "t",
        "Key": {"k": {"S": "a"}},
        "UpdateExpression": "SET v = :v",
        "ExpressionAttributeValues": {":v": {"S": "after"}},
    }
    failing_check = {
        "TableName": "t",
        "Key": {"k": {"S": "b"}},
        "ConditionExpression": "v = :x",
        "ExpressionAttributeValues": {":x": {"S": "no"}},
    }
    put = {"TableName": "t", "Item": {"k": {"S": "new"}}}
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(
            TransactItems=[{"Update": update}, {"Put": put}, {"ConditionCheck": failing_check}]
        )
    items = ddb.scan(TableName="t")["Items"]
    return {item["k"]["S"]: item.get("v", {}).get("S", "") for item in items}


def transaction_peak_bytes(ddb: Any) -> int:
    """Memory a one-item transaction allocates at its peak, on a table of 2,000 items (a copy of
    the table's objects, items and stream records, takes some MB: moto's strings are shared)."""
    attributes = {f"a{n}": {"N": str(n)} for n in range(10)}
    for n in range(2_000):
        ddb.put_item(TableName="t", Item={"k": {"S": f"item-{n}"}, **attributes})
    tracemalloc.start()
    try:
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"k": {"S": "small"}}}}])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_moto_as_released_copies_the_whole_table_for_each_transaction(stream: tuple[Any, Any, str]) -> None:
    # If this fails, moto no longer backs the table up whole: the fix can go (moto_fixes.py).
    assert transaction_peak_bytes(stream[0]) > 10_000_000


def test_with_the_fix_a_transaction_copies_only_the_items_it_names(stream: tuple[Any, Any, str]) -> None:
    undo: Callable[[], None] = moto_fixes.install()
    try:
        assert transaction_peak_bytes(stream[0]) < 2_000_000
    finally:
        undo()


def test_with_the_fix_a_cancelled_transaction_leaves_every_item_as_it_was(
    stream: tuple[Any, Any, str],
) -> None:
    undo = moto_fixes.install()
    try:
        assert updated_then_cancelled(stream[0]) == {"a": "before", "b": "untouched"}
    finally:
        undo()
