/** The protocol the raw stream benchmark speaks; nothing in the product handles it. */
export const RAW_PROTOCOL = '/stor/bench/raw/1.0.0'
