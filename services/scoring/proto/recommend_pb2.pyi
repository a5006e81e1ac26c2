from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "exclude_seen", "category", "variant", "context", "include_items", "exclude_items", "boost_items", "boost_categories", "tenant")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BoostItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BoostCategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    BOOST_ITEMS_FIELD_NUMBER: _ClassVar[int]
    BOOST_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    exclude_seen: bool
    category: str
    variant: str
    context: _containers.ScalarMap[str, str]
    include_items: _containers.RepeatedScalarFieldContainer[str]
    exclude_items: _containers.RepeatedScalarFieldContainer[str]
    boost_items: _containers.ScalarMap[str, float]
    boost_categories: _containers.ScalarMap[str, float]
    tenant: str
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_seen: _Optional[bool] = ..., category: _Optional[str] = ..., variant: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., include_items: _Optional[_Iterable[str]] = ..., exclude_items: _Optional[_Iterable[str]] = ..., boost_items: _Optional[_Mapping[str, float]] = ..., boost_categories: _Optional[_Mapping[str, float]] = ..., tenant: _Optional[str] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "tenant", "user_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    tenant: str
    user_id: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., tenant: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class PopularRequest(_message.Message):
    __slots__ = ("k", "window", "category", "tenant")
    K_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    k: int
    window: str
    category: str
    tenant: str
    def __init__(self, k: _Optional[int] = ..., window: _Optional[str] = ..., category: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score", "rank", "source", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    rank: int
    source: str
    reason: str
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("request_id", "model_version", "variant", "degraded", "items", "model_name", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_version: str
    variant: str
    degraded: bool
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model_name: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., model_version: _Optional[str] = ..., variant: _Optional[str] = ..., degraded: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., model_name: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...
