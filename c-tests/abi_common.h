/* Shared compile-time ABI checks for the libusbmuxd 2.x headers.
 *
 * Included by abi_layout.c (our include/ headers) and abi_upstream.c (Debian's
 * upstream 2.0.2 headers): both must satisfy exactly the same numbers, which are
 * those of docs libusbmuxd-api.md §2 and usbmuxd-client-protocol.md §3-§5
 * (x86_64 / any LP64 or ILP32 target with 4-byte enums).
 *
 * Include <usbmuxd.h> and <usbmuxd-proto.h> before this file. Valid as C11 and C++11.
 */
#ifndef ABI_COMMON_H
#define ABI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define ABI_ASSERT(cond) static_assert(cond, #cond)
#define ABI_ALIGNOF(type) alignof(type)
#else
#define ABI_ASSERT(cond) _Static_assert(cond, #cond)
#define ABI_ALIGNOF(type) _Alignof(type)
#endif

#define FIELD_SIZE(type, field) sizeof(((type *)0)->field)
#define FIELD_AT(type, field, off, size) \
    ABI_ASSERT(offsetof(type, field) == (off)); \
    ABI_ASSERT(FIELD_SIZE(type, field) == (size))

/* ---- usbmuxd.h: enums ---- */
ABI_ASSERT(DEVICE_LOOKUP_USBMUX == 2);
ABI_ASSERT(DEVICE_LOOKUP_NETWORK == 4);
ABI_ASSERT(DEVICE_LOOKUP_PREFER_NETWORK == 8);
ABI_ASSERT(sizeof(enum usbmux_lookup_options) == 4);
ABI_ASSERT(CONNECTION_TYPE_USB == 1);
ABI_ASSERT(CONNECTION_TYPE_NETWORK == 2);
ABI_ASSERT(sizeof(enum usbmux_connection_type) == 4);
ABI_ASSERT(UE_DEVICE_ADD == 1);
ABI_ASSERT(UE_DEVICE_REMOVE == 2);
ABI_ASSERT(UE_DEVICE_PAIRED == 3);
ABI_ASSERT(sizeof(enum usbmuxd_event_type) == 4);

/* ---- usbmuxd.h: structs ---- */
ABI_ASSERT(sizeof(usbmuxd_device_info_t) == 256);
ABI_ASSERT(ABI_ALIGNOF(usbmuxd_device_info_t) == 4);
FIELD_AT(usbmuxd_device_info_t, handle, 0, 4);
FIELD_AT(usbmuxd_device_info_t, product_id, 4, 4);
FIELD_AT(usbmuxd_device_info_t, udid, 8, 44);
FIELD_AT(usbmuxd_device_info_t, conn_type, 52, 4);
FIELD_AT(usbmuxd_device_info_t, conn_data, 56, 200);
ABI_ASSERT(sizeof(((usbmuxd_device_info_t *)0)->udid[0]) == 1);
ABI_ASSERT(sizeof(((usbmuxd_device_info_t *)0)->conn_data[0]) == 1);

ABI_ASSERT(sizeof(usbmuxd_event_t) == 260);
ABI_ASSERT(ABI_ALIGNOF(usbmuxd_event_t) == 4);
FIELD_AT(usbmuxd_event_t, event, 0, 4);
FIELD_AT(usbmuxd_event_t, device, 4, 256);

ABI_ASSERT(sizeof(usbmuxd_subscription_context_t) == sizeof(void *));
ABI_ASSERT(sizeof(usbmuxd_event_cb_t) == sizeof(void (*)(void)));

/* ---- usbmuxd-proto.h ---- */
ABI_ASSERT(USBMUXD_PROTOCOL_VERSION == 0);

ABI_ASSERT(RESULT_OK == 0);
ABI_ASSERT(RESULT_BADCOMMAND == 1);
ABI_ASSERT(RESULT_BADDEV == 2);
ABI_ASSERT(RESULT_CONNREFUSED == 3);
ABI_ASSERT(RESULT_BADVERSION == 6);
ABI_ASSERT(sizeof(enum usbmuxd_result) == 4);

ABI_ASSERT(MESSAGE_RESULT == 1);
ABI_ASSERT(MESSAGE_CONNECT == 2);
ABI_ASSERT(MESSAGE_LISTEN == 3);
ABI_ASSERT(MESSAGE_DEVICE_ADD == 4);
ABI_ASSERT(MESSAGE_DEVICE_REMOVE == 5);
ABI_ASSERT(MESSAGE_DEVICE_PAIRED == 6);
ABI_ASSERT(MESSAGE_PLIST == 8);
ABI_ASSERT(sizeof(enum usbmuxd_msgtype) == 4);

ABI_ASSERT(sizeof(struct usbmuxd_header) == 16);
ABI_ASSERT(ABI_ALIGNOF(struct usbmuxd_header) == 1);
FIELD_AT(struct usbmuxd_header, length, 0, 4);
FIELD_AT(struct usbmuxd_header, version, 4, 4);
FIELD_AT(struct usbmuxd_header, message, 8, 4);
FIELD_AT(struct usbmuxd_header, tag, 12, 4);

ABI_ASSERT(sizeof(struct usbmuxd_result_msg) == 20);
ABI_ASSERT(ABI_ALIGNOF(struct usbmuxd_result_msg) == 1);
FIELD_AT(struct usbmuxd_result_msg, header, 0, 16);
FIELD_AT(struct usbmuxd_result_msg, result, 16, 4);

ABI_ASSERT(sizeof(struct usbmuxd_connect_request) == 24);
ABI_ASSERT(ABI_ALIGNOF(struct usbmuxd_connect_request) == 1);
FIELD_AT(struct usbmuxd_connect_request, header, 0, 16);
FIELD_AT(struct usbmuxd_connect_request, device_id, 16, 4);
FIELD_AT(struct usbmuxd_connect_request, port, 20, 2);
FIELD_AT(struct usbmuxd_connect_request, reserved, 22, 2);

ABI_ASSERT(sizeof(struct usbmuxd_listen_request) == 16);
ABI_ASSERT(ABI_ALIGNOF(struct usbmuxd_listen_request) == 1);
FIELD_AT(struct usbmuxd_listen_request, header, 0, 16);

ABI_ASSERT(sizeof(struct usbmuxd_device_record) == 268);
ABI_ASSERT(ABI_ALIGNOF(struct usbmuxd_device_record) == 1);
FIELD_AT(struct usbmuxd_device_record, device_id, 0, 4);
FIELD_AT(struct usbmuxd_device_record, product_id, 4, 2);
FIELD_AT(struct usbmuxd_device_record, serial_number, 6, 256);
FIELD_AT(struct usbmuxd_device_record, padding, 262, 2);
FIELD_AT(struct usbmuxd_device_record, location, 264, 4);

/* ---- function signatures: each function must convert, without a cast, to a pointer
 * of exactly the upstream type (an error under -Werror otherwise; in C++ the types
 * must match exactly). Top-level const on parameters is not part of the type. ---- */
static inline int abi_check_signatures(void)
{
    int (*events_subscribe)(usbmuxd_subscription_context_t *, usbmuxd_event_cb_t, void *) = usbmuxd_events_subscribe;
    int (*events_unsubscribe)(usbmuxd_subscription_context_t) = usbmuxd_events_unsubscribe;
    int (*subscribe)(usbmuxd_event_cb_t, void *) = usbmuxd_subscribe;
    int (*unsubscribe)(void) = usbmuxd_unsubscribe;
    int (*get_device_list)(usbmuxd_device_info_t **) = usbmuxd_get_device_list;
    int (*device_list_free)(usbmuxd_device_info_t **) = usbmuxd_device_list_free;
    int (*get_device_by_udid)(const char *, usbmuxd_device_info_t *) = usbmuxd_get_device_by_udid;
    int (*get_device)(const char *, usbmuxd_device_info_t *, enum usbmux_lookup_options) = usbmuxd_get_device;
    int (*connect_)(const uint32_t, const unsigned short) = usbmuxd_connect;
    int (*disconnect)(int) = usbmuxd_disconnect;
    int (*send_)(int, const char *, uint32_t, uint32_t *) = usbmuxd_send;
    int (*recv_timeout)(int, char *, uint32_t, uint32_t *, unsigned int) = usbmuxd_recv_timeout;
    int (*recv_)(int, char *, uint32_t, uint32_t *) = usbmuxd_recv;
    int (*read_buid)(char **) = usbmuxd_read_buid;
    int (*read_pair_record)(const char *, char **, uint32_t *) = usbmuxd_read_pair_record;
    int (*save_pair_record)(const char *, const char *, uint32_t) = usbmuxd_save_pair_record;
    int (*save_pair_record_with_device_id)(const char *, uint32_t, const char *, uint32_t) = usbmuxd_save_pair_record_with_device_id;
    int (*delete_pair_record)(const char *) = usbmuxd_delete_pair_record;
    void (*set_use_inotify)(int) = libusbmuxd_set_use_inotify;
    void (*set_debug_level)(int) = libusbmuxd_set_debug_level;
    int n = 0;
    /* The 2.0.2 header has no USBMUXD_API and no libusbmuxd_version (added in 2.1.0). */
#ifdef USBMUXD_API
    const char *(*version)(void) = libusbmuxd_version;
    n += version != 0;
#endif
    n += events_subscribe != 0;
    n += events_unsubscribe != 0;
    n += subscribe != 0;
    n += unsubscribe != 0;
    n += get_device_list != 0;
    n += device_list_free != 0;
    n += get_device_by_udid != 0;
    n += get_device != 0;
    n += connect_ != 0;
    n += disconnect != 0;
    n += send_ != 0;
    n += recv_timeout != 0;
    n += recv_ != 0;
    n += read_buid != 0;
    n += read_pair_record != 0;
    n += save_pair_record != 0;
    n += save_pair_record_with_device_id != 0;
    n += delete_pair_record != 0;
    n += set_use_inotify != 0;
    n += set_debug_level != 0;
    return n;
}

#ifdef __cplusplus
#include <type_traits>
/* C++ is stricter than C about enum types: the field and parameter must be the enums. */
ABI_ASSERT((std::is_same<decltype(((usbmuxd_device_info_t *)0)->conn_type), enum usbmux_connection_type>::value));
ABI_ASSERT((std::is_same<decltype(((usbmuxd_event_t *)0)->event), int>::value));
ABI_ASSERT((std::is_same<decltype(&usbmuxd_get_device),
                         int (*)(const char *, usbmuxd_device_info_t *, enum usbmux_lookup_options)>::value));
ABI_ASSERT((std::is_same<usbmuxd_event_cb_t, void (*)(const usbmuxd_event_t *, void *)>::value));
ABI_ASSERT((std::is_same<usbmuxd_subscription_context_t, struct usbmuxd_subscription_context *>::value));
#endif

#endif /* ABI_COMMON_H */
