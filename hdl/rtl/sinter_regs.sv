// The register map of sinter_isa::regs: control, status, program address and length, error
// reporting, counters and hardware config readback. Reads are combinational.
//
// CONTROL start is ignored while a program runs. CONTROL reset returns every register to its
// power-on value and aborts the run (the other modules see `soft_reset_o`); reset wins over a
// start written in the same word. Start with a PROG_BASE that is not instruction aligned stops at
// once with ERR_PROG_ALIGN.
module sinter_regs #(
  parameter int unsigned ROWS      = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned ACT_DEPTH = sinter_isa_pkg::DEFAULT_ACT_DEPTH,
  parameter int unsigned WGT_DEPTH = sinter_isa_pkg::DEFAULT_WGT_DEPTH,
  parameter int unsigned ACC_DEPTH = sinter_isa_pkg::DEFAULT_ACC_DEPTH,
  parameter int unsigned OUT_DEPTH = sinter_isa_pkg::DEFAULT_OUT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES
) (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        reg_wr_en_i,
  input  logic [7:0]  reg_wr_addr_i,
  input  logic [31:0] reg_wr_data_i,
  input  logic [7:0]  reg_rd_addr_i,
  output logic [31:0] reg_rd_data_o,
  output logic        start_o,        // pulse: a program starts
  output logic        soft_reset_o,   // pulse: CONTROL reset
  output logic        running_o,
  output logic [31:0] prog_base_o,
  output logic [31:0] prog_len_o,
  input  logic        fault_i,
  input  logic [7:0]  fault_code_i,
  input  logic [31:0] fault_pc_i,
  input  logic        finished_i,
  input  logic        mac_active_i,
  input  logic [2:0]  insns_done_i
);
  localparam logic [31:0] INSN_MASK = 32'(sinter_isa_pkg::INSN_BYTES) - 32'd1;
  localparam logic [31:0] CONFIG_ARRAY = 32'(ROWS) | (32'(COLS) << 8) | (32'(BUS_BYTES) << 16);

  logic        running_q, done_q, error_q;
  logic [7:0]  err_code_q;
  logic [31:0] err_pc_q, prog_base_q, prog_len_q, insns_q;
  logic [63:0] cycles_q, mac_q;
  logic        ctrl_wr, start_req, misaligned;

  assign ctrl_wr      = reg_wr_en_i && (reg_wr_addr_i == sinter_isa_pkg::REG_CONTROL);
  assign soft_reset_o = ctrl_wr && reg_wr_data_i[sinter_isa_pkg::CONTROL_RESET_BIT];
  assign start_req    = ctrl_wr && reg_wr_data_i[sinter_isa_pkg::CONTROL_START_BIT] &&
                        !soft_reset_o && !running_q;
  assign misaligned   = (prog_base_q & INSN_MASK) != '0;
  assign start_o      = start_req && !misaligned;

  always_ff @(posedge clk_i) begin
    if (!rst_ni || soft_reset_o) begin
      running_q   <= 1'b0;
      done_q      <= 1'b0;
      error_q     <= 1'b0;
      err_code_q  <= sinter_isa_pkg::ERR_NONE;
      err_pc_q    <= '0;
      prog_base_q <= '0;
      prog_len_q  <= '0;
      insns_q     <= '0;
      cycles_q    <= '0;
      mac_q       <= '0;
    end else begin
      if (reg_wr_en_i && reg_wr_addr_i == sinter_isa_pkg::REG_PROG_BASE) prog_base_q <= reg_wr_data_i;
      if (reg_wr_en_i && reg_wr_addr_i == sinter_isa_pkg::REG_PROG_LEN)  prog_len_q  <= reg_wr_data_i;
      if (start_req) begin
        running_q  <= !misaligned;
        done_q     <= 1'b0;
        error_q    <= misaligned;
        err_code_q <= misaligned ? sinter_isa_pkg::ERR_PROG_ALIGN : sinter_isa_pkg::ERR_NONE;
        err_pc_q   <= '0;
        insns_q    <= '0;
        cycles_q   <= '0;
        mac_q      <= '0;
      end else if (running_q) begin
        cycles_q <= cycles_q + 64'd1;
        mac_q    <= mac_q + 64'(mac_active_i);
        insns_q  <= insns_q + 32'(insns_done_i);
        if (fault_i) begin
          running_q  <= 1'b0;
          error_q    <= 1'b1;
          err_code_q <= fault_code_i;
          err_pc_q   <= fault_pc_i;
        end else if (finished_i) begin
          running_q <= 1'b0;
          done_q    <= 1'b1;
        end
      end
    end
  end

  assign running_o   = running_q;
  assign prog_base_o = prog_base_q;
  assign prog_len_o  = prog_len_q;

  always_comb begin
    unique case (reg_rd_addr_i)
      sinter_isa_pkg::REG_VERSION:          reg_rd_data_o = sinter_isa_pkg::ARCH_VERSION;
      sinter_isa_pkg::REG_STATUS: begin
        reg_rd_data_o = '0;
        reg_rd_data_o[sinter_isa_pkg::STATUS_BUSY_BIT]  = running_q;
        reg_rd_data_o[sinter_isa_pkg::STATUS_DONE_BIT]  = done_q;
        reg_rd_data_o[sinter_isa_pkg::STATUS_ERROR_BIT] = error_q;
      end
      sinter_isa_pkg::REG_ERROR_CODE:       reg_rd_data_o = 32'(err_code_q);
      sinter_isa_pkg::REG_PROG_BASE:        reg_rd_data_o = prog_base_q;
      sinter_isa_pkg::REG_PROG_LEN:         reg_rd_data_o = prog_len_q;
      sinter_isa_pkg::REG_CYCLES_LO:        reg_rd_data_o = cycles_q[31:0];
      sinter_isa_pkg::REG_CYCLES_HI:        reg_rd_data_o = cycles_q[63:32];
      sinter_isa_pkg::REG_MAC_ACTIVE_LO:    reg_rd_data_o = mac_q[31:0];
      sinter_isa_pkg::REG_MAC_ACTIVE_HI:    reg_rd_data_o = mac_q[63:32];
      sinter_isa_pkg::REG_INSNS_DONE:       reg_rd_data_o = insns_q;
      sinter_isa_pkg::REG_ERROR_PC:         reg_rd_data_o = err_pc_q;
      sinter_isa_pkg::REG_CONFIG_ARRAY:     reg_rd_data_o = CONFIG_ARRAY;
      sinter_isa_pkg::REG_CONFIG_ACT_DEPTH: reg_rd_data_o = 32'(ACT_DEPTH);
      sinter_isa_pkg::REG_CONFIG_WGT_DEPTH: reg_rd_data_o = 32'(WGT_DEPTH);
      sinter_isa_pkg::REG_CONFIG_ACC_DEPTH: reg_rd_data_o = 32'(ACC_DEPTH);
      sinter_isa_pkg::REG_CONFIG_OUT_DEPTH: reg_rd_data_o = 32'(OUT_DEPTH);
      default:                              reg_rd_data_o = '0;  // CONTROL is write-only
    endcase
  end
endmodule
