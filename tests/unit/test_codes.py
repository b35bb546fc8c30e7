"""node.codes mirrors the wire enums of medledger.v1 exactly."""

from __future__ import annotations

from medledger.v1 import gateway_pb2, ledger_pb2

from node.codes import RETRYABLE_CODES, TxCode, TxStatus


def test_tx_code_names_and_numbers_equal_the_wire_enum() -> None:
    assert {c.name: c.value for c in TxCode} == dict(ledger_pb2.TxCode.items())


def test_tx_status_numbers_equal_the_wire_enum() -> None:
    python_side = sorted(s.value for s in TxStatus)
    wire_side = sorted(ledger_value for _, ledger_value in gateway_pb2.TxStatus.items())
    assert python_side == wire_side
    wire_names = {int(number): name for name, number in gateway_pb2.TxStatus.items()}
    for status in TxStatus:
        if status.value != 0:
            assert wire_names[status.value] == status.name


def test_tx_status_names_and_numbers_equal_the_wire_enum_exactly() -> None:
    assert {s.name: s.value for s in TxStatus} == dict(gateway_pb2.TxStatus.items())


def test_retryable_codes_are_the_not_now_refusals() -> None:
    assert {
        TxCode.MEMPOOL_FULL,
        TxCode.QUOTA_EXCEEDED,
        TxCode.NOT_LEADER,
        TxCode.SHUTTING_DOWN,
    } == RETRYABLE_CODES
