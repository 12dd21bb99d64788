"""``ss -i`` for a TCP socket: the kernel's ``tcp_info`` in iproute2 6.1's words, order and number forms.

ss prints each field only when it is non-zero (a few have their own rule: ``rto`` not at its
3-second initial value, ``reordering`` only when not 3, ``sacked`` not on a listener), times as
``%g`` milliseconds and rates through ``sprint_bw`` (``119Gbps``, or whole bits with ``-n``).
"""

from __future__ import annotations

from udpkit.inventory import SocketState, TcpSocket

__all__ = ["bandwidth", "tcp_info_text"]

_OPTION_WORDS = ((1, " ts"), (2, " sack"), (8, " ecn"), (16, " ecnseen"), (32, " fastopen"))
_WSCALE = 4
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


def bandwidth(bps: float, numeric: bool) -> str:
    """ss's ``sprint_bw``: ``%.3g`` with a k/M/G/T suffix, or (``-n``) the whole number of bits."""
    if numeric:
        return "%.0f" % bps
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if bps >= limit:
            return "%.3g%s" % (bps / limit, suffix)
    return "%g" % bps


def tcp_info_text(sock: TcpSocket, numeric: bool, options: bool) -> str:
    """The text ``tcp_stats_print`` writes for ``sock`` (empty for an entry without ``tcp_info``)."""
    info = sock.info
    if info is None:
        return ""
    out: list[str] = []
    add = out.append
    if options:
        out.extend(word for bit, word in _OPTION_WORDS if info.options & bit)
    if sock.congestion:
        add(f" {sock.congestion}")
    if info.options & _WSCALE:
        add(f" wscale:{info.snd_wscale},{info.rcv_wscale}")
    if info.rto and info.rto != 3000000:
        add(" rto:%g" % (info.rto / 1000))
    if info.backoff:
        add(f" backoff:{info.backoff}")
    if info.rtt:
        add(" rtt:%g/%g" % (info.rtt / 1000, info.rttvar / 1000))
    if info.ato:
        add(" ato:%g" % (info.ato / 1000))
    for value, name in ((info.snd_mss, "mss"), (info.pmtu, "pmtu"), (info.rcv_mss, "rcvmss"),
                        (info.advmss, "advmss"), (info.snd_cwnd, "cwnd")):
        if value:
            add(f" {name}:{value}")
    if info.snd_ssthresh < 0xFFFF and info.snd_ssthresh:
        add(f" ssthresh:{info.snd_ssthresh}")
    for value, name in ((info.bytes_sent, "bytes_sent"), (info.bytes_retrans, "bytes_retrans"),
                        (info.bytes_acked, "bytes_acked"), (info.bytes_received, "bytes_received"),
                        (info.segs_out, "segs_out"), (info.segs_in, "segs_in"),
                        (info.data_segs_out, "data_segs_out"), (info.data_segs_in, "data_segs_in")):
        if value:
            add(f" {name}:{value}")
    rtt = float(info.rtt)
    cc = sock.cc_info
    if cc is not None and cc.kind == "vegas":
        enabled, _count, vrtt, _min = cc.values
        if enabled and vrtt and vrtt != 0x7FFFFFFF:
            rtt = float(vrtt)
    if cc is not None and cc.kind == "dctcp":
        enabled, ce_state, alpha, ab_ecn, ab_tot = cc.values
        add(f" dctcp:(ce_state:{ce_state},alpha:{alpha},ab_ecn:{ab_ecn},ab_tot:{ab_tot})" if enabled
            else " dctcp:fallback_mode")
    if cc is not None and cc.kind == "bbr":
        bw_lo, bw_hi, min_rtt, pacing_gain, cwnd_gain = cc.values
        text = " bbr:(bw:%sbps,mrtt:%g" % (bandwidth(((bw_hi << 32) | bw_lo) * 8.0, numeric), min_rtt / 1000.0)
        if pacing_gain:
            text += ",pacing_gain:%g" % (pacing_gain / 256.0)
        if cwnd_gain:
            text += ",cwnd_gain:%g" % (cwnd_gain / 256.0)
        add(text + ")")
    if rtt > 0 and info.snd_mss and info.snd_cwnd:
        add(" send %sbps" % bandwidth(info.snd_cwnd * info.snd_mss * 8000000.0 / rtt, numeric))
    for value, name in ((info.last_data_sent, "lastsnd"), (info.last_data_recv, "lastrcv"),
                        (info.last_ack_recv, "lastack")):
        if value:
            add(f" {name}:{value}")
    if info.pacing_rate and info.pacing_rate != _U64_MAX:
        add(" pacing_rate %sbps" % bandwidth(info.pacing_rate * 8.0, numeric))
        if info.max_pacing_rate and info.max_pacing_rate != _U64_MAX:
            add("/%sbps" % bandwidth(info.max_pacing_rate * 8.0, numeric))
    if info.delivery_rate:
        add(" delivery_rate %sbps" % bandwidth(info.delivery_rate * 8.0, numeric))
    if info.delivered:
        add(f" delivered:{info.delivered}")
    if info.delivered_ce:
        add(f" delivered_ce:{info.delivered_ce}")
    if info.app_limited:
        add(" app_limited")
    if info.busy_time:
        add(f" busy:{info.busy_time // 1000}ms")
        if info.rwnd_limited:
            add(" rwnd_limited:%dms(%.1f%%)" % (info.rwnd_limited // 1000, 100.0 * info.rwnd_limited / info.busy_time))
        if info.sndbuf_limited:
            add(" sndbuf_limited:%dms(%.1f%%)"
                % (info.sndbuf_limited // 1000, 100.0 * info.sndbuf_limited / info.busy_time))
    if info.unacked:
        add(f" unacked:{info.unacked}")
    if info.retrans or info.total_retrans:
        add(f" retrans:{info.retrans}/{info.total_retrans}")
    if info.lost:
        add(f" lost:{info.lost}")
    if info.sacked and sock.state != SocketState.LISTEN:
        add(f" sacked:{info.sacked}")
    if info.dsack_dups:
        add(f" dsack_dups:{info.dsack_dups}")
    if info.fackets:
        add(f" fackets:{info.fackets}")
    if info.reordering != 3:
        add(f" reordering:{info.reordering}")
    if info.reord_seen:
        add(f" reord_seen:{info.reord_seen}")
    if info.rcv_rtt:
        add(" rcv_rtt:%g" % (info.rcv_rtt / 1000))
    for value, name in ((info.rcv_space, "rcv_space"), (info.rcv_ssthresh, "rcv_ssthresh"),
                        (info.notsent_bytes, "notsent")):
        if value:
            add(f" {name}:{value}")
    if info.min_rtt and info.min_rtt != _U32_MAX:
        add(" minrtt:%g" % (info.min_rtt / 1000))
    if info.rcv_ooopack:
        add(f" rcv_ooopack:{info.rcv_ooopack}")
    if info.snd_wnd:
        add(f" snd_wnd:{info.snd_wnd}")
    return "".join(out)
